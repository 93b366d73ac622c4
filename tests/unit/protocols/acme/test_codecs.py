"""Sans-I/O ACME codecs: JWS parsing and verification, nonces, identifiers, CertIDs, windows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from acmekit import b64, new_key, sign
from iotpki.core.acme_ports import RenewalOverride
from iotpki.core.models import CertificateRecord
from iotpki.core.ratelimit import SharedWindow
from iotpki.protocols.acme import jws, messages, renewal
from iotpki.protocols.acme.nonces import NonceTable
from iotpki.protocols.acme.problems import AcmeProblem
from iotpki.store.sql import SqlStore

from conftest import ManualClock

URL = "https://acme.test/acme/new-order"


def _signed(key: object = None, **header: object) -> dict[str, object]:
    key = key or new_key()
    return sign(key, b"{}", {"nonce": "n", "url": URL, "kid": "k", **header})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kty,params,alg",
    [
        ("EC", {}, "ES256"),
        ("EC", {"crv": "P-384"}, "ES384"),
        ("RSA", {}, "RS256"),
        ("OKP", {}, "EdDSA"),
    ],
)
def test_each_algorithm_verifies(kty: str, params: dict[str, str], alg: str) -> None:
    key = new_key(kty, **params)
    signed = jws.parse(json.dumps(_signed(key)).encode())
    assert signed.alg == alg
    jws.verify(signed, jws.public_key(json.loads(key.export_public()), alg))


def test_bad_signature_and_mismatched_key() -> None:
    signed = jws.parse(json.dumps(_signed()).encode())
    with pytest.raises(AcmeProblem) as caught:
        jws.verify(signed, new_key())
    assert caught.value.kind == "malformed"
    with pytest.raises(AcmeProblem) as caught:
        jws.verify(signed, new_key("OKP"))
    assert caught.value.kind == "badSignatureAlgorithm"


def test_signature_is_checked_over_the_received_text() -> None:
    key = new_key()
    public = jws.public_key(json.loads(key.export_public()), "ES256")
    good = _signed(key)
    # RFC 7518 section 3.4: an ES256 signature is R || S, 64 bytes, nothing else.
    padded = {**good, "signature": b64(jws.b64url_decode(str(good["signature"])) + b"\0")}
    with pytest.raises(AcmeProblem) as caught:
        jws.verify(jws.parse(json.dumps(padded).encode()), public)
    assert caught.value.kind == "malformed"
    # RFC 7515 section 5.2: the input is the protected header as sent, not a re-encoding.
    header = json.loads(jws.b64url_decode(str(good["protected"])))
    respaced = {**good, "protected": b64(json.dumps(header, indent=1).encode())}
    with pytest.raises(AcmeProblem):
        jws.verify(jws.parse(json.dumps(respaced).encode()), public)
    jws.verify(jws.parse(json.dumps(good).encode()), public)


@pytest.mark.parametrize(
    "body,kind",
    [
        (b"[]", "malformed"),
        (b'{"protected":"e30","payload":"","signature":"","header":{}}', "malformed"),
        (
            json.dumps(
                {
                    "protected": b64(b'{"alg":"none","nonce":"n","url":"u","kid":"k"}'),
                    "payload": "",
                    "signature": "",
                }
            ).encode(),
            "badSignatureAlgorithm",
        ),
        (
            json.dumps(
                {
                    "protected": b64(b'{"alg":"HS256","nonce":"n","url":"u","kid":"k"}'),
                    "payload": "",
                    "signature": "",
                }
            ).encode(),
            "badSignatureAlgorithm",
        ),
        (
            json.dumps(
                {
                    "protected": b64(b'{"alg":"ES256","url":"u","kid":"k"}'),
                    "payload": "",
                    "signature": "",
                }
            ).encode(),
            "badNonce",
        ),
        (
            json.dumps(
                {
                    "protected": b64(b'{"alg":"ES256","nonce":"n","kid":"k"}'),
                    "payload": "",
                    "signature": "",
                }
            ).encode(),
            "malformed",
        ),
        (
            json.dumps(
                {
                    "protected": b64(b'{"alg":"ES256","nonce":"n","url":"u"}'),
                    "payload": "",
                    "signature": "",
                }
            ).encode(),
            "malformed",
        ),
        (json.dumps({"protected": "e30=", "payload": "", "signature": ""}).encode(), "malformed"),
    ],
)
def test_parse_refuses(body: bytes, kind: str) -> None:
    with pytest.raises(AcmeProblem) as caught:
        jws.parse(body)
    assert caught.value.kind == kind


def test_public_key_refuses_private_and_small_keys() -> None:
    private = json.loads(new_key().export_private())
    with pytest.raises(AcmeProblem, match="public"):
        jws.public_key(private)
    small = json.loads(new_key("RSA", size=1024).export_public())
    with pytest.raises(AcmeProblem, match="2048"):
        jws.public_key(small)
    odd = {**json.loads(new_key().export_public()), "crv": []}  # once a TypeError, then a 500
    with pytest.raises(AcmeProblem, match="unsupported"):
        jws.public_key(odd)


def test_nonces_are_single_use_expire_and_are_shared(tmp_path: Path) -> None:
    clock = ManualClock()
    store = SqlStore(f"sqlite:///{tmp_path / 'iotpki.db'}")
    store.migrate()
    table = NonceTable(b"k" * 32, store, clock, lifetime=timedelta(seconds=10))
    other_replica = NonceTable(b"k" * 32, store, clock, lifetime=timedelta(seconds=10))
    first = table.issue()
    assert other_replica.consume(first) and not table.consume(first)
    late = table.issue()
    clock.advance(timedelta(seconds=11))
    assert not table.consume(late)
    forged = NonceTable(b"x" * 32, store, clock).issue()
    assert not table.consume(forged)
    assert not table.consume("not base64 !") and not table.consume("")
    assert not table.consume(first[:-2] + ("A" if first[-2] != "A" else "B") + first[-1])


def test_identifiers() -> None:
    parsed = messages.parse_identifiers(
        [
            {"type": "dns", "value": "B.Example"},
            {"type": "ip", "value": "::0:1"},
            {"type": "dns", "value": "b.example"},
        ]
    )
    assert parsed == [("dns", "b.example"), ("ip", "::1")]
    for bad, kind in (
        ([], "malformed"),
        ([{"type": "dns", "value": "*.x.example"}], "rejectedIdentifier"),
        ([{"type": "ip", "value": "300.1.1.1"}], "malformed"),
        ([{"type": "uri", "value": "x"}], "unsupportedIdentifier"),
        (
            [
                {"type": "dns", "value": "a.example"},
                {"type": "permanent-identifier", "value": "SN-1"},
            ],
            "rejectedIdentifier",
        ),
    ):
        with pytest.raises(AcmeProblem) as caught:
            messages.parse_identifiers(bad)
        assert caught.value.kind == kind


def test_revocation_reasons() -> None:
    assert str(messages.revocation_reason(1)) == "keyCompromise"
    for bad in (2, 7, 11, True, "1"):
        with pytest.raises(AcmeProblem):
            messages.revocation_reason(bad)


def test_cert_id_round_trip() -> None:
    assert messages.parse_cert_id("aGVsbG8.AIA") == (b"hello", "80")
    with pytest.raises(AcmeProblem):
        messages.parse_cert_id("aGVsbG8.gA")  # negative serial


def _record(serial: str) -> CertificateRecord:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return CertificateRecord(
        serial=serial,
        ca_name="issuing",
        profile="server",
        device_id=None,
        subject="",
        sans=(),
        not_before=start,
        not_after=start + timedelta(days=90),
        key_fingerprint="",
        key_algorithm="p256",
        der=b"",
    )


def test_renewal_windows_spread_and_override() -> None:
    starts = {renewal.suggested_window(_record(format(n, "x")), [])[0] for n in range(50)}
    assert len(starts) == 50
    record = _record("1f")
    for start in starts:
        assert (
            record.not_before + timedelta(days=54)
            <= start
            <= record.not_before + timedelta(days=72)
        )
    now = datetime(2026, 2, 1, tzinfo=UTC)
    override = RenewalOverride("o", now, now + timedelta(hours=6), now, ca_name="issuing")
    assert renewal.suggested_window(record, [override])[:2] == (now, now + timedelta(hours=6))


def test_shared_window_counts_across_replicas(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = SqlStore(f"sqlite:///{tmp_path / 'iotpki.db'}")
    store.migrate()
    one = SharedWindow(store, "orders", 2, timedelta(seconds=60), clock)
    two = SharedWindow(store, "orders", 2, timedelta(seconds=60), clock)
    assert one.retry_after(["a"]) is None and two.retry_after(["a"]) is None
    assert one.retry_after(["a"]) == 60 and two.retry_after(["a"]) == 60  # refusals not counted
    assert one.retry_after(["b"]) is None
    clock.advance(timedelta(seconds=90))  # half of the previous window still counts: 2 * 0.5
    assert two.retry_after(["a"]) is None
    assert (wait := two.retry_after(["a"])) is not None and 1 <= wait <= 30
    clock.advance(timedelta(seconds=120))
    assert one.retry_after(["a"]) is None


def test_csr_identifiers_report_other_names() -> None:
    from conftest import device_csr

    csr = device_csr(
        "a.example", sans=[x509.DNSName("a.example"), x509.UniformResourceIdentifier("urn:x")]
    )
    assert messages.csr_identifiers(csr) == {
        ("cn", "a.example"),
        ("dns", "a.example"),
        ("other", "urn:x"),
    }
