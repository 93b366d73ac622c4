"""ACME device-attest-01 end to end with a real software TPM (swtpm).

The device enrolls its attestation key at the AK CA over REST (EK certificate from swtpm's
manufacturer CA, TPM2_ActivateCredential in swtpm), then orders a certificate for its
``permanent-identifier`` and answers device-attest-01 with a TPM2_Certify statement over a key
the TPM made; the CSR is signed inside the TPM. Every forged or mismatched statement is refused
with a problem document and an audit event.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.testclient import TestClient

pytest.importorskip("tpm2_pytss")

from tpm2_pytss.constants import TPMA_OBJECT

from acmekit import ACME, Client, acme_context, b64
from iotpki.api.akca import akca_routes
from iotpki.core.akca import AK_PROFILE
from iotpki.core.attestation import (
    OID_AK_CERTIFICATE,
    OID_PERMANENT_IDENTIFIER,
    permanent_identifier_der,
)
from iotpki.core.models import KeyAlgorithm
from iotpki.keys.tpm import TpmBackend
from iotpki.protocols.acme import AcmeContext, ValidationQueue, acme_routes
from iotpki.services.attestation import AKCA_SECRET, AkcaService, EkRoots
from iotpki.services.installation import Installation

from conftest import ManualClock, make_installation
from tpm import Manufactured, SoftwareTpm, require_swtpm, start_swtpm
from tpm import manufactured_tpm as manufactured_tpm


@dataclass
class Device:
    """The device under test: its TPM, enrolled AK and AK certificate chain."""

    tpm: SoftwareTpm
    backend: TpmBackend
    ak: str
    ak_chain: list[x509.Certificate]
    identifier: str


@dataclass
class World:
    """One installation serving ACME and the AK CA, and one device."""

    inst: Installation
    ctx: AcmeContext
    http: TestClient
    device: Device
    clock: ManualClock


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def enroll_ak(http: TestClient, tpm: SoftwareTpm, backend: TpmBackend, ak: str) -> dict[str, Any]:
    """The AK CA exchange over REST, the TPM answering the credential challenge."""
    body = {
        "ek_chain": [
            _b64(backend.endorsement_certificate().public_bytes(serialization.Encoding.DER)),
            _b64(tpm.manufactured.manufacturer_issuer.public_bytes(serialization.Encoding.DER)),
        ],
        "ak_public": _b64(backend.public_area(ak)),
    }
    challenge = http.post("https://acme.test/api/v1/akca/challenge", json=body)
    assert challenge.status_code == 200, challenge.text
    sealed = challenge.json()
    credential = backend.activate_credential(
        ak,
        base64.b64decode(sealed["credential_blob"]),
        base64.b64decode(sealed["encrypted_secret"]),
    )
    activated = http.post(
        "https://acme.test/api/v1/akca/activate",
        json={
            **body,
            "nonce": sealed["nonce"],
            "issued_at": sealed["issued_at"],
            "credential": _b64(credential),
        },
    )
    assert activated.status_code == 201, activated.text
    return dict(activated.json())


@pytest.fixture(scope="module")
def world(
    manufactured_tpm: Manufactured, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    require_swtpm()
    directory = tmp_path_factory.mktemp("device-attest")
    clock = ManualClock()
    inst = make_installation(directory / "home", clock=clock)
    ek_roots = EkRoots(inst.store, inst.home)
    ek_roots.add(manufactured_tpm.manufacturer_root, clock.now())
    queue = ValidationQueue(manual=True)
    ctx = acme_context(inst, queue=queue)
    routes = acme_routes(ctx) + akca_routes(
        AkcaService(
            inst.settings, inst.authority, ek_roots, inst.secrets.get(AKCA_SECRET), inst.store
        ),
        inst.authority,
        inst.store,
        per_minute=1000,
    )
    tpm = start_swtpm(manufactured_tpm, directory)
    backend = TpmBackend(tpm.tcti, directory / "keys")
    try:
        with TestClient(Starlette(routes=routes), base_url="https://acme.test") as http:
            ak = backend.create_attestation_key("ak")
            enrolled = enroll_ak(http, tpm, backend, ak)
            chain = x509.load_pem_x509_certificates(enrolled["chain"].encode())
            device = Device(tpm, backend, ak, chain, enrolled["permanent_identifier"])
            yield World(inst, ctx, http, device, clock)
    finally:
        backend.close()
        tpm.stop()
        inst.close()


def new_order(world: World, identifier: str | None = None) -> tuple[Client, dict[str, Any]]:
    """A fresh account orders a certificate for the device; returns the challenge too."""
    client = Client(world.http)
    assert client.register().status_code == 201
    value = identifier or world.device.identifier
    response = client.post(
        f"{ACME}/new-order", {"identifiers": [{"type": "permanent-identifier", "value": value}]}
    )
    assert response.status_code == 201, response.text
    order = response.json()
    order["url"] = response.headers["location"]
    authz = client.post(order["authorizations"][0], None).json()
    assert [c["type"] for c in authz["challenges"]] == ["device-attest-01"]
    order["challenge"] = authz["challenges"][0]
    return client, order


def att_obj(world: World, key: str, key_authorization: str, **changes: Any) -> bytes:
    """The device's attestation object for ``key``, with statement fields replaced."""
    device = world.device
    data = device.backend.attestation_object(key, device.ak, device.ak_chain, key_authorization)
    if not changes:
        return data
    decoded = cbor2.loads(data)
    decoded["attStmt"].update(changes)
    return bytes(cbor2.dumps(decoded))


def answer(client: Client, order: dict[str, Any], obj: bytes) -> dict[str, Any]:
    response = client.post(order["challenge"]["url"], {"attObj": b64(obj)})
    assert response.status_code == 200, response.text
    return dict(response.json())


def tpm_csr(world: World, key: str, cn: str) -> bytes:
    """A CSR signed inside the TPM."""
    signer = world.device.backend.signer(key)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(signer, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def audit(world: World, action: str) -> list[dict[str, Any]]:
    return [dict(e.data) for e in world.inst.store.audit_events() if e.action == action]


def refused(world: World, check: str, detail: str, challenge: dict[str, Any]) -> None:
    """The challenge is invalid with a badAttestationStatement problem, audited with its check."""
    assert challenge["status"] == "invalid"
    error = challenge["error"]
    assert error["type"] == "urn:ietf:params:acme:error:badAttestationStatement", error
    assert detail in error["detail"]
    assert any(e["check"] == check for e in audit(world, "acme.device_attest.refused"))


def test_device_attest_issues_an_attested_certificate(world: World) -> None:
    device = world.device
    key = device.backend.generate("attested", KeyAlgorithm.P256)
    client, order = new_order(world)
    token = order["challenge"]["token"]
    challenge = answer(client, order, att_obj(world, key, client.key_authorization(token)))
    assert challenge["status"] == "valid", challenge
    assert client.post(order["url"], None).json()["status"] == "ready"

    response = client.post(order["finalize"], {"csr": b64(tpm_csr(world, key, device.identifier))})
    assert response.status_code == 200, response.text
    done = client.post(order["url"], None).json()
    assert done["status"] == "valid"
    chain = client.post(done["certificate"], None)
    leaf = x509.load_pem_x509_certificates(chain.content)[0]
    assert leaf.public_key() == device.backend.public_key(key)

    serial = format(leaf.serial_number, "x")
    record = world.inst.authority.attestation(serial)
    assert record is not None and record.method == "tpm"
    assert record.device_identity == f"permanent-identifier:{device.identifier}"
    assert record.ak_fingerprint and record.root_fingerprint
    issued = [e for e in audit(world, "certificate.issued") if e.get("attested") == "tpm"]
    assert issued and issued[-1]["device"] == device.identifier
    assert audit(world, "acme.device_attest.verified")


def test_ak_certificate_is_a_tcg_ak_certificate(world: World) -> None:
    ak_cert = world.device.ak_chain[0]
    eku = ak_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert OID_AK_CERTIFICATE in eku
    san = ak_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    names = san.value.get_values_for_type(x509.OtherName)
    assert names == [
        x509.OtherName(OID_PERMANENT_IDENTIFIER, permanent_identifier_der(world.device.identifier))
    ]
    serial = format(ak_cert.serial_number, "x")
    assert world.inst.authority.get(serial).profile == AK_PROFILE.name


def test_statement_over_another_key(world: World) -> None:
    """certInfo certifies one TPM key, pubArea shows another: the names differ."""
    backend = world.device.backend
    key = backend.generate("certified", KeyAlgorithm.P256)
    other = backend.generate("claimed", KeyAlgorithm.P256)
    client, order = new_order(world)
    ka = client.key_authorization(order["challenge"]["token"])
    challenge = answer(client, order, att_obj(world, key, ka, pubArea=backend.public_area(other)))
    refused(world, "name", "does not certify the key in pubArea", challenge)
    assert client.post(order["url"], None).json()["status"] == "invalid"


def test_tampered_cert_info(world: World) -> None:
    key = world.device.backend.generate("tampered-info", KeyAlgorithm.P256)
    client, order = new_order(world)
    ka = client.key_authorization(order["challenge"]["token"])
    cert_info = bytearray(cbor2.loads(att_obj(world, key, ka))["attStmt"]["certInfo"])
    cert_info[-1] ^= 0x01  # the last byte of the certified name
    challenge = answer(client, order, att_obj(world, key, ka, certInfo=bytes(cert_info)))
    refused(world, "signature", "does not verify", challenge)


def test_tampered_pub_area(world: World) -> None:
    """Setting fixedTPM on a key's public area by hand changes its name."""
    backend = world.device.backend
    key = backend.generate("tampered-area", KeyAlgorithm.P256)
    client, order = new_order(world)
    ka = client.key_authorization(order["challenge"]["token"])
    area = bytearray(backend.public_area(key))
    area[4 + 3] ^= 0x40  # TPMA_OBJECT's lowest byte: flip userWithAuth
    challenge = answer(client, order, att_obj(world, key, ka, pubArea=bytes(area)))
    refused(world, "name", "does not certify the key in pubArea", challenge)


def test_wrong_key_authorization(world: World) -> None:
    key = world.device.backend.generate("stale", KeyAlgorithm.P256)
    client, order = new_order(world)
    challenge = answer(client, order, att_obj(world, key, "another-token.thumbprint"))
    refused(world, "extra_data", "extraData", challenge)


def test_untrusted_ak_root(world: World) -> None:
    """An AK certificate from a CA the installation does not trust, naming the right device."""
    device = world.device
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue AK CA")])
    now = world.clock.now()
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    genuine = device.ak_chain[0]
    forged = (
        x509.CertificateBuilder()
        .subject_name(genuine.subject)
        .issuer_name(name)
        .public_key(genuine.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
    )
    for extension in genuine.extensions:
        if not isinstance(extension.value, x509.AuthorityKeyIdentifier):
            forged = forged.add_extension(extension.value, extension.critical)
    rogue = forged.sign(ca_key, hashes.SHA256())
    key = device.backend.generate("rogue", KeyAlgorithm.P256)
    client, order = new_order(world)
    ka = client.key_authorization(order["challenge"]["token"])
    x5c = [c.public_bytes(serialization.Encoding.DER) for c in (rogue, ca)]
    challenge = answer(client, order, att_obj(world, key, ka, x5c=x5c))
    refused(world, "chain", "does not chain to a trusted root", challenge)


def test_key_without_fixed_tpm(world: World) -> None:
    """A TPM key that may be duplicated out of the TPM is not a device key."""
    backend = world.device.backend
    loose = backend._create(
        "loose",
        "ecc256:ecdsa-sha256:null",
        TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT,
    )
    client, order = new_order(world)
    ka = client.key_authorization(order["challenge"]["token"])
    challenge = answer(client, order, att_obj(world, loose, ka))
    refused(world, "attributes", "fixedTPM", challenge)


def test_identifier_not_named_by_the_ak(world: World) -> None:
    key = world.device.backend.generate("elsewhere", KeyAlgorithm.P256)
    client, order = new_order(world, "urn:ek:sha256:someone-else")
    ka = client.key_authorization(order["challenge"]["token"])
    challenge = answer(client, order, att_obj(world, key, ka))
    refused(world, "identifier", "does not name", challenge)


def test_garbage_statement(world: World) -> None:
    client, order = new_order(world)
    challenge = answer(client, order, b"\xff not cbor")
    refused(world, "cbor", "attObj", challenge)


def test_missing_att_obj_changes_nothing(world: World) -> None:
    client, order = new_order(world)
    response = client.post(order["challenge"]["url"], {})
    assert response.status_code == 400
    assert response.json()["type"] == "urn:ietf:params:acme:error:malformed"
    assert client.post(order["challenge"]["url"], None).json()["status"] == "pending"
    bad = client.post(order["challenge"]["url"], {"attObj": "not base64url!"})
    assert bad.json()["type"] == "urn:ietf:params:acme:error:malformed"
    assert client.post(order["challenge"]["url"], None).json()["status"] == "pending"


def test_csr_for_a_different_key(world: World) -> None:
    """A valid attestation, then a CSR for a software key: refused, the order stays ready."""
    device = world.device
    key = device.backend.generate("honest", KeyAlgorithm.P256)
    client, order = new_order(world)
    ka = client.key_authorization(order["challenge"]["token"])
    assert answer(client, order, att_obj(world, key, ka))["status"] == "valid"
    software = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device.identifier)]))
        .sign(software, hashes.SHA256())
    )
    der = csr.public_bytes(serialization.Encoding.DER)
    response = client.post(order["finalize"], {"csr": b64(der)})
    assert response.status_code == 400
    assert response.json()["type"] == "urn:ietf:params:acme:error:badCSR"
    assert "not the key the TPM attested" in response.json()["detail"]
    refusals = audit(world, "acme.refused")
    assert refusals[-1]["type"] == "badCSR"
    assert client.post(order["url"], None).json()["status"] == "ready"
    ok = client.post(order["finalize"], {"csr": b64(tpm_csr(world, key, device.identifier))})
    assert ok.status_code == 200, ok.text


def test_akca_refuses_untrusted_ek_and_garbage(world: World) -> None:
    backend = world.device.backend
    stranger = world.inst.authority.chain(world.inst.authority.default_issuing_ca())[0]
    body = {
        "ek_chain": [_b64(stranger.public_bytes(serialization.Encoding.DER))],
        "ak_public": _b64(backend.public_area(world.device.ak)),
    }
    response = world.http.post("https://acme.test/api/v1/akca/challenge", json=body)
    assert response.status_code == 400
    assert response.json()["check"] == "ek_chain"
    assert audit(world, "akca.challenge.refused")[-1]["check"] == "ek_chain"
    for bad in ({"ek_chain": "x"}, {"ek_chain": ["!!"], "ak_public": "AA=="}, []):
        response = world.http.post("https://acme.test/api/v1/akca/challenge", json=bad)
        assert response.status_code == 400, response.text
    wrong_type = world.http.post(
        "https://acme.test/api/v1/akca/activate",
        content=b"{}",
        headers={"content-type": "text/plain"},
    )
    assert wrong_type.status_code == 415


def test_device_identifiers_get_no_challenge_without_roots(tmp_path: Path) -> None:
    """Without attestation roots device identifiers stay EAB-authorised (no challenge)."""
    inst = make_installation(tmp_path / "home")
    try:
        ctx = acme_context(inst)
        assert ctx.attestation_roots() == []
    finally:
        inst.close()


def test_validation_queue_is_not_used(world: World) -> None:
    """device-attest-01 is decided in the request: nothing waits in the queue."""
    assert asyncio.run(world.ctx.queue.drain()) == 0


def test_hardware_module_identifier(world: World) -> None:
    """RFC 4108 names are offered device-attest-01; an AK naming only an EK is not enough."""
    client = Client(world.http)
    assert client.register().status_code == 201
    bad = client.post(
        f"{ACME}/new-order", {"identifiers": [{"type": "hardware-module", "value": "serial-1"}]}
    )
    assert bad.json()["type"] == "urn:ietf:params:acme:error:rejectedIdentifier"
    mixed = client.post(
        f"{ACME}/new-order",
        {
            "identifiers": [
                {"type": "hardware-module", "value": "1.3.6.1.4.1.99999.1:0a0b"},
                {"type": "dns", "value": "device.example"},
            ]
        },
    )
    assert mixed.json()["type"] == "urn:ietf:params:acme:error:rejectedIdentifier"
    response = client.post(
        f"{ACME}/new-order",
        {"identifiers": [{"type": "hardware-module", "value": "1.3.6.1.4.1.99999.1:0A0B"}]},
    )
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["identifiers"][0]["value"] == "1.3.6.1.4.1.99999.1:0a0b"
    authz = client.post(order["authorizations"][0], None).json()
    assert [c["type"] for c in authz["challenges"]] == ["device-attest-01"]
    order["challenge"] = authz["challenges"][0]
    key = world.device.backend.generate("module", KeyAlgorithm.P256)
    ka = client.key_authorization(order["challenge"]["token"])
    refused(world, "identifier", "does not name", answer(client, order, att_obj(world, key, ka)))
