"""Provisioning request IDs on each database: answered once, in the certificate's transaction."""

from __future__ import annotations

from iotpki.services.installation import Installation


def test_a_request_id_is_recorded_once(any_inst: Installation) -> None:
    now = any_inst.authority.clock.now()
    with any_inst.store.transaction() as tx:
        assert tx.provisioning_request("k1") is None
        assert tx.add_provisioning_request("k1", "issuing", "01ab", now)
    with any_inst.store.transaction() as tx:
        assert not tx.add_provisioning_request("k1", "issuing", "02cd", now)
        assert tx.provisioning_request("k1") == ("issuing", "01ab")
