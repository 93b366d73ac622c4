"""Key quality over the inventory: the issuance-time tests of ``core.keyquality``, run on every
certified key once (results are kept per key fingerprint), plus keys certified for several
identities. Catches what was issued before a check existed or imported from elsewhere."""

from __future__ import annotations

import json
from datetime import datetime

from cryptography import x509

from iotpki.core.keyquality import KeyBlocklist, weaknesses
from iotpki.core.monitoring import Observation
from iotpki.store.monitoring import SqlMonitoringStore

__all__ = ["key_observations", "scan_keys"]

_BATCH = 5000


def scan_keys(
    store: SqlMonitoringStore, now: datetime, blocklist: KeyBlocklist | None = None
) -> int:
    """Check every key not checked yet; returns how many keys were checked."""
    checked = 0
    after = 0
    while True:
        rows = store.unchecked_keys(after, _BATCH)
        if not rows:
            return checked
        results: dict[str, tuple[str, str]] = {}
        for _id, fingerprint, der in rows:
            if fingerprint in results:
                continue
            try:
                key = x509.load_der_x509_certificate(der).public_key()
            except ValueError as exc:
                results[fingerprint] = ("weak", json.dumps([["unparsable", str(exc)]]))
                continue
            weak = weaknesses(key, blocklist)
            results[fingerprint] = (
                ("weak", json.dumps([[w.check, w.detail] for w in weak])) if weak else ("ok", "[]")
            )
        store.record_key_checks(results, now)
        checked += len(results)
        after = rows[-1][0]


def key_observations(store: SqlMonitoringStore) -> list[Observation]:
    """Weak keys and keys shared between identities, one finding per key."""
    found: list[Observation] = []
    for fingerprint, detail, holders in store.weak_keys():
        checks = json.loads(detail)
        found.append(
            Observation(
                check="weak_key",
                key=fingerprint,
                severity="critical",
                summary=f"weak key ({', '.join(c[0] for c in checks)}) in {len(holders)} "
                "certificate(s)",
                evidence={
                    "checks": checks,
                    "certificates": [{"serial": s, "ca": c, "device": d} for s, c, d in holders],
                },
                ca_name=holders[0][1],
                serial=holders[0][0],
                device_id=holders[0][2],
            )
        )
    for fingerprint, holders in store.shared_keys():
        found.append(
            Observation(
                check="shared_key",
                key=fingerprint,
                severity="high",
                summary=f"one public key certified for {len(holders)} identities",
                evidence={
                    "certificates": [{"serial": s, "ca": c, "device": d} for s, c, d in holders]
                },
            )
        )
    return found
