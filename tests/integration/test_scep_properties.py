"""Property tests (issue 13): mutated pkiMessages, by GET and POST PKIOperation, always get a
CertRep signed by the RA or an HTTP 4xx; never a 5xx, never an escaping exception."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotpki.protocols.scep.client import issuer_and_serial
from iotpki.protocols.scep.messages import MessageType
from scepapp import PKI, URL, Scep, running_scep
from scepkit import (
    OID_MESSAGE_DIGEST,
    OID_MESSAGE_TYPE,
    OID_SENDER_NONCE,
    OID_SIGNING_TIME,
    OID_TRANSACTION_ID,
    Device,
    Parts,
    assemble,
    duplicated_rdn_certificate,
    rsa_key,
    seal,
)

from conftest import ManualClock

EXAMPLES = settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def scep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scep]:
    home = Path(tmp_path_factory.mktemp("scep-properties")) / "home"
    with running_scep(home, ManualClock()) as app:
        yield app


@pytest.fixture(scope="module")
def device() -> Device:
    return Device("prop-dev", rsa_key(70))


def _answer(scep: Scep, der: bytes, method: str) -> None:
    """The property: a verified CertRep from the RA, or a 4xx with a reason."""
    if method == "GET":
        message = base64.b64encode(der).decode()
        response = scep.http.get(URL, params={"operation": "PKIOperation", "message": message})
    else:
        response = scep.http.post(URL, params=PKI, content=der)
    if response.status_code == 200:
        assert response.headers["content-type"] == "application/x-pki-message"
        Device("reader", rsa_key(0)).read(response.content, scep.ra, scep.clock.now())
    else:
        assert 400 <= response.status_code < 500, response.text
        assert response.text.strip()


def _seeds(scep: Scep, device: Device) -> list[Parts]:
    now = scep.clock.now()
    signer = device.self_signed(now)
    tid = device.transaction_id
    poll = issuer_and_serial(scep.chain[0].subject, 1)
    return [
        Parts.of(signer, MessageType.PKCS_REQ, tid, seal(device.csr("pw"), scep.ra), now),
        Parts.of(signer, MessageType.GET_CERT, tid, seal(poll, scep.ra), now, b"\x08" * 16),
        Parts.of(signer, MessageType.CERT_POLL, tid, seal(poll, scep.ra), now, b"\x09" * 16),
    ]


_METHODS = st.sampled_from(["GET", "POST"])
_ATTRIBUTES = [
    OID_MESSAGE_DIGEST,
    OID_MESSAGE_TYPE,
    OID_SENDER_NONCE,
    OID_SIGNING_TIME,
    OID_TRANSACTION_ID,
]
_VALUES = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda tag, body: bytes([tag, len(body)]) + body,
        st.integers(0, 255),
        st.binary(max_size=40),
    ),
)


@st.composite
def _der_mutation(draw: st.DrawFn, message: bytes) -> bytes:
    """Bytes changed, cut out or inserted anywhere in a valid message."""
    data = bytearray(message)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "set", "cut", "insert", "truncate"]))
        if action == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[position : position + draw(st.integers(1, 32))]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[position:]
        if not data:
            break
    return bytes(data)


@st.composite
def _structural_mutation(draw: st.DrawFn, parts: Parts, scep: Scep, device: Device) -> Parts:
    """A part of a valid message replaced, repeated or dropped; the client signs it anew."""
    changed = replace(
        parts, attributes=list(parts.attributes), certificates=list(parts.certificates)
    )
    for _ in range(draw(st.integers(1, 3))):
        action = draw(
            st.sampled_from(
                [
                    "repeat",
                    "drop",
                    "value",
                    "values",
                    "rdn",
                    "cert",
                    "content",
                    "csr",
                    "digest",
                    "type",
                ]
            )
        )
        if action == "repeat" and changed.attributes:
            changed.attributes.append(draw(st.sampled_from(changed.attributes)))
        elif action == "drop" and changed.attributes:
            del changed.attributes[draw(st.integers(0, len(changed.attributes) - 1))]
        elif action == "value":
            oid = draw(st.sampled_from(_ATTRIBUTES))
            value = draw(_VALUES)
            changed.attributes = [(o, [value] if o == oid else v) for o, v in changed.attributes]
        elif action == "values":
            oid = draw(st.sampled_from(_ATTRIBUTES))
            changed.attributes = [(o, v * 2 if o == oid else v) for o, v in changed.attributes]
        elif action == "rdn":
            cert, sid = duplicated_rdn_certificate(device.self_signed(scep.clock.now()))
            changed.certificates, changed.sid = [cert], sid
        elif action == "cert":
            changed.certificates = [draw(_der_mutation(changed.certificates[0]))]
        elif action == "content":
            changed.content = draw(
                st.one_of(st.none(), _der_mutation(changed.content or b"\x30\x00"))
            )
        elif action == "csr":
            changed.content = seal(draw(_der_mutation(device.csr("pw"))), scep.ra)
        elif action == "digest":
            changed.digest_oid = draw(
                st.sampled_from(["1.2.840.113549.2.5", "2.16.840.1.101.3.4.2.3", "1.2.3"])
            )
        else:
            changed.content_type_oid = draw(st.sampled_from(["1.2.840.113549.1.7.3", "1.2.3"]))
    return changed


@EXAMPLES
@given(data=st.data(), method=_METHODS)
def test_der_mutations_get_a_cert_rep_or_a_4xx(
    scep: Scep, device: Device, data: st.DataObject, method: str
) -> None:
    seeds = [assemble(parts, device.key) for parts in _seeds(scep, device)]
    message = data.draw(st.sampled_from(seeds).flatmap(_der_mutation))
    _answer(scep, message, method)


@EXAMPLES
@given(data=st.data(), method=_METHODS)
def test_structural_mutations_resigned_get_a_cert_rep_or_a_4xx(
    scep: Scep, device: Device, data: st.DataObject, method: str
) -> None:
    parts = data.draw(st.sampled_from(_seeds(scep, device)))
    changed = data.draw(_structural_mutation(parts, scep, device))
    _answer(scep, assemble(changed, device.key), method)
