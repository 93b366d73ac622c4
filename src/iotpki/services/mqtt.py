"""Provisioning over MQTT for one installation: the service that ``[mqtt] broker_url`` turns on.

It connects with the identity ``iotpki broker config`` wrote (``provisioner.pem``,
``provisioner.key``; ``ca.pem`` verifies the broker), answers requests through the
installation's enrollment service, and announces (retained) the trust bundle and each CA's
latest CRL numbers and URLs. The certificate is re-read when ``iotpki broker refresh`` renews
it, so the next connection uses the new one.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iotpki.core.authority import Issued
from iotpki.core.enrollment import Enrollment
from iotpki.core.partitions import partition_url
from iotpki.core.publication import CrlPublisher, crl_url
from iotpki.errors import ConfigError
from iotpki.files import write_atomically
from iotpki.net.tls import Identity, client_context
from iotpki.protocols.mqtt import messages
from iotpki.protocols.mqtt.provisioner import Provisioner, ProvisionerConfig
from iotpki.protocols.mqtt.service import BrokerConnection, ProvisioningService
from iotpki.services.installation import Installation
from iotpki.services.revocation import revocation_config
from iotpki.settings import MqttSettings
from iotpki.store.revocation import SqlRevocationStore

__all__ = ["announcements", "issue_claim", "provisioning_service"]

_PEM = serialization.Encoding.PEM

log = logging.getLogger(__name__)


def announcements(inst: Installation, provisioner: Provisioner) -> dict[str, bytes]:
    """The retained topics as they should be now: the trust bundle and each CA's CRLs."""
    topics = provisioner.topics
    trust = messages.pem_chain(provisioner.cacerts())
    out = {topics.trust: json.dumps({"certificates": trust}).encode()}
    store = SqlRevocationStore(inst.store)
    publisher = CrlPublisher(inst.authority, store, revocation_config(inst.settings))
    base = inst.settings.effective_public_base_url
    for name in publisher.signing_cas():
        crl = store.get_crl(name, "full", with_der=False)
        if crl is None:
            continue
        delta = store.get_crl(name, "delta", with_der=False)
        body: dict[str, object] = {
            "ca": name,
            "number": crl.number,
            "this_update": crl.this_update.isoformat(),
            "next_update": crl.next_update.isoformat(),
            "url": crl_url(base, name, "full"),
            "partitions": [
                {
                    "partition": part.partition,
                    "number": part.number,
                    "url": partition_url(base, name, part.partition),
                }
                for part in store.partition_crls(name)
                if part.kind == "full" and part.partition is not None
            ],
        }
        if delta is not None:
            body["delta"] = {"number": delta.number, "url": crl_url(base, name, "delta")}
        out[topics.crl(name)] = json.dumps(body).encode()
    return out


def provisioning_service(
    inst: Installation, enrollment: Enrollment, settings: MqttSettings | None = None
) -> ProvisioningService:
    """The installation's provisioning service on ``enrollment``, not yet started (ConfigError
    when ``broker_url`` is unset or the broker files are missing). ``settings`` default to the
    installation's ``[mqtt]``."""
    settings = settings or inst.settings.mqtt
    if settings.broker_url is None:
        raise ConfigError("set [mqtt] broker_url to provision over MQTT")
    directory = settings.client_dir or inst.home / "broker"
    identity = Identity(directory / "provisioner.pem", directory / "provisioner.key")
    try:
        trust = (directory / "ca.pem").read_text()
    except OSError as exc:
        raise ConfigError(
            f"no broker files in {directory}: run `iotpki broker config --dir {directory}`"
        ) from exc
    tls = client_context(trust=trust, identity=identity)
    provisioner = Provisioner(
        enrollment,
        inst.store,
        ProvisionerConfig(settings.prefix, settings.requests_per_minute),
    )
    connection = BrokerConnection.from_url(settings.broker_url, tls, settings.client_id)
    return ProvisioningService(
        provisioner,
        connection,
        lambda: announcements(inst, provisioner),
        threads=settings.threads,
        announce_interval=settings.announce_interval,
        identity=identity,
    )


def issue_claim(
    inst: Installation,
    batch: str,
    ca: str,
    directory: Path,
    *,
    actor: str,
    lifetime: timedelta | None = None,
) -> Issued:
    """A batch's claim certificate (``claim`` profile, P-256) from ``ca``, written with its
    chain as ``claim.pem`` and its key as ``claim.key`` (0600) for the batch's firmware image."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, batch)]))
        .sign(key, hashes.SHA256())
    )
    issued = inst.authority.issue(csr, profile="claim", ca=ca, lifetime=lifetime, actor=actor)
    directory.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomically(directory / "claim.key", key_pem, mode=0o600)
    write_atomically(directory / "claim.pem", b"".join(c.public_bytes(_PEM) for c in issued.chain))
    return issued
