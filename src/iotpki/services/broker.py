"""A TLS-terminating service kept in step with iotpki: the mosquitto MQTT broker.

``iotpki broker config`` writes, into one directory, what mosquitto's TLS listener needs:

- ``ca.pem``      the trust anchors (active roots) and the issuing CAs whose certificates are
                  still valid, so clients that send only their leaf are verified too;
- ``broker.pem``  the broker's certificate from the ``server`` profile with its CA chain (and
                  the rollover cross-certificate, so devices that trust only the old root
                  accept it); ``broker.key`` its key (0600);
- ``crl.pem``     the latest complete CRL of every CA held here and of each of its live CRL
                  partitions, from the store (mosquitto checks the leaf's: OpenSSL matches a
                  partition by its issuingDistributionPoint);
- ``mosquitto.conf`` the listener: ``require_certificate``, ``use_identity_as_username`` (the
                  certificate's commonName, i.e. the device ID), TLS 1.3, and an ACL file that
                  lets each device write only below ``devices/<its id>/`` and named readers
                  read ``devices/#``;
- ``provisioner.pem`` / ``provisioner.key``  the certificate (``server`` profile, commonName
                  ``iotpki-provisioner``) the provisioning service connects with; the ACL lets
                  it serve the provisioning topics (``iotpki mqtt-provisioner``), and lets a
                  device publish requests only on ``<prefix><op>/<its identity>/<its client
                  ID>`` and read only the replies below ``<prefix>reply/<identity>/<client ID>``;
- ``broker.json`` the settings above, for ``iotpki broker refresh``.

``iotpki broker refresh`` (set it as ``revocation.publish_command``, which runs after each CRL
publication) rewrites what changed, renews the broker's certificate once two thirds of its
lifetime have passed, and makes mosquitto reload (SIGHUP, or a configured command): the next
connection of a revoked device is refused. Any other TLS-terminating service (nginx, HAProxy,
Envoy) is kept the same way: point its CA, certificate, key and CRL settings at these files and
its reload command at ``reload_command``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shlex
import signal
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iotpki.core.models import CAKind, CAStatus, CertStatus
from iotpki.core.rollover import cross_certificates
from iotpki.errors import ConfigError
from iotpki.files import write_atomically
from iotpki.services.installation import Installation
from iotpki.services.revocation import RevocationService

__all__ = ["BrokerSettings", "refresh", "write_config"]

log = logging.getLogger(__name__)

_PEM = serialization.Encoding.PEM
_SETTINGS = "broker.json"


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker's files go and what its listener and certificate look like."""

    directory: Path
    names: tuple[str, ...] = ("127.0.0.1",)  # the broker certificate's DNS names / IPs
    host: str = "127.0.0.1"
    port: int = 8883
    readers: tuple[str, ...] = ()  # identities allowed to read every device's topics
    user: str | None = None  # the user mosquitto runs as once started as root
    pid_file: Path | None = None  # signal this process with SIGHUP to reload
    reload_command: str | None = None  # or run this (e.g. "systemctl reload mosquitto")
    renew_after: float = 2 / 3  # renew once this fraction of the lifetime has passed
    serial: str | None = field(default=None)  # the broker certificate in use
    provisioner: str = "iotpki-provisioner"  # the provisioning service's identity
    mqtt_prefix: str = "iotpki/"  # the provisioning topics' prefix
    provisioner_serial: str | None = None  # the provisioning service's certificate in use

    def save(self) -> None:
        """Write ``broker.json`` into the directory."""
        data = asdict(self)
        data["directory"] = str(self.directory)
        data["pid_file"] = None if self.pid_file is None else str(self.pid_file)
        write_atomically(self.directory / _SETTINGS, json.dumps(data, indent=2).encode())

    @classmethod
    def load(cls, directory: Path) -> BrokerSettings:
        """The settings ``iotpki broker config`` left in ``directory``."""
        try:
            data = json.loads((directory / _SETTINGS).read_text())
            data["directory"] = Path(data["directory"])
            data["pid_file"] = Path(data["pid_file"]) if data.get("pid_file") else None
            data["names"], data["readers"] = tuple(data["names"]), tuple(data["readers"])
            return cls(**data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"no usable broker settings in {directory}: {exc}") from exc

    def path(self, name: str) -> Path:
        """A file of the broker's directory."""
        return self.directory / name


def _mosquitto_conf(settings: BrokerSettings) -> str:
    p = settings.path
    return "\n".join(
        [
            "# Written by `iotpki broker config`; `iotpki broker refresh` keeps the files current.",
            "per_listener_settings false",
            "# request/response (provisioning) waits on Nagle and delayed ACKs without this",
            "set_tcp_nodelay true",
            *([f"user {settings.user}"] if settings.user else []),
            "allow_anonymous false",
            f"acl_file {p('acl')}",
            f"listener {settings.port} {settings.host}",
            f"cafile {p('ca.pem')}",
            f"certfile {p('broker.pem')}",
            f"keyfile {p('broker.key')}",
            f"crlfile {p('crl.pem')}",
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.3",
            "",
        ]
    )


def _acl(settings: BrokerSettings) -> str:
    p = settings.mqtt_prefix
    lines = [
        "# each device writes only its own topics",
        "pattern write devices/%u/#",
        "# provisioning over MQTT: requests on <op>/<identity>/<client ID>, replies below",
        "# reply/<identity>/<client ID>; the retained trust bundle and CRL announcements",
        *(f"pattern write {p}{op}/%u/%c" for op in ("enroll", "renew", "cacerts")),
        f"pattern read {p}reply/%u/%c",
        f"pattern read {p}reply/%u/%c/#",
        f"pattern read {p}trust",
        f"pattern read {p}crl/#",
        "",
        f"user {settings.provisioner}",
        f"topic readwrite {p}#",
        "",
    ]
    for reader in settings.readers:
        lines += [f"user {reader}", "topic read devices/#", ""]
    return "\n".join(lines)


def _trust(inst: Installation) -> bytes:
    """Active roots, and issuing CAs that still have valid certificates (active or retired)."""
    now = inst.authority.clock.now()
    certs = []
    for ca in inst.authority.list_cas():
        if ca.certificate_der is None or ca.status not in (CAStatus.ACTIVE, CAStatus.RETIRED):
            continue
        cert = ca.certificate
        self_signed = ca.kind is CAKind.ROOT and ca.parent is None
        if cert.not_valid_after_utc <= now or (self_signed and ca.status is CAStatus.RETIRED):
            continue
        if self_signed or ca.kind is CAKind.ISSUING:
            certs.append(cert)
    return b"".join(c.public_bytes(_PEM) for c in certs)


def _crls(service: RevocationService) -> bytes:
    """The complete CRLs of each CA held here and its partitions (made now where due)."""
    out = []
    for name in service.publisher.signing_cas():
        crl = service.store.get_crl(name, "full")
        if crl is None or crl.der is None:
            crl = service.publisher.generate(name, "full", actor="system:broker")
        assert crl.der is not None
        out.append(x509.load_der_x509_crl(crl.der).public_bytes(_PEM))
        now = service.now()
        if service.partitions.due(name, now):
            service.partitions.publish_due(name, now, actor="system:broker")
        for info in service.store.partition_crls(name):
            if info.kind == "full" and info.partition is not None:
                part = service.store.get_partition_crl(name, info.partition, "full")
                if part is not None and part.der is not None:
                    out.append(x509.load_der_x509_crl(part.der).public_bytes(_PEM))
    return b"".join(out)


def _needs_certificate(
    inst: Installation, settings: BrokerSettings, serial: str | None, stem: str
) -> bool:
    if serial is None or not settings.path(f"{stem}.pem").is_file():
        return True
    record = inst.authority.get(serial)
    if record.status is not CertStatus.VALID:
        return True
    if inst.authority.get_ca(record.ca_name).status is not CAStatus.ACTIVE:
        return True  # its CA was rolled over: move to the successor's chain now
    lifetime = record.not_after - record.not_before
    due = record.not_before + timedelta(seconds=lifetime.total_seconds() * settings.renew_after)
    return inst.authority.clock.now() >= due


def _issue_certificate(
    inst: Installation,
    settings: BrokerSettings,
    serial: str | None,
    stem: str,
    dns_names: tuple[str, ...],
) -> str:
    """A new key and certificate from the ``server`` profile, written as ``<stem>.pem`` (with
    its chain) and ``<stem>.key``; ``serial`` is the certificate it replaces."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for name in dns_names:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    authority = inst.authority
    if serial is not None and authority.get(serial).status is CertStatus.VALID:
        issued = authority.renew(serial, csr=csr, actor="system:broker")
    else:
        issued = authority.issue(csr, profile="server", actor="system:broker")
    root = authority.chain(issued.record.ca_name)[-1]
    crosses = [
        c.certificate
        for c in cross_certificates(authority, _ca_name_of(inst, root))
        if c.status is CAStatus.ACTIVE and c.certificate.public_key() == root.public_key()
    ]
    chain = b"".join(c.public_bytes(_PEM) for c in (*issued.chain, *crosses))
    key_pem = key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomically(settings.path(f"{stem}.key"), key_pem, mode=0o600)
    write_atomically(settings.path(f"{stem}.pem"), chain)
    log.info("%s certificate %s issued by %s", stem, issued.record.serial, issued.record.ca_name)
    return issued.record.serial


def _ca_name_of(inst: Installation, cert: x509.Certificate) -> str:
    der = cert.public_bytes(serialization.Encoding.DER)
    for ca in inst.authority.list_cas():
        if ca.certificate_der == der:
            return ca.name
    raise ConfigError(f"no CA record for {cert.subject.rfc4514_string()}")


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    write_atomically(path, data)
    return True


def write_config(inst: Installation, settings: BrokerSettings) -> BrokerSettings:
    """Write every file of the broker directory; the settings with the certificate's serial."""
    settings.directory.mkdir(parents=True, exist_ok=True)
    _write_if_changed(settings.path("mosquitto.conf"), _mosquitto_conf(settings).encode())
    _write_if_changed(settings.path("acl"), _acl(settings).encode())
    settings, _ = _refresh_files(inst, settings)
    settings.save()
    return settings


def _refresh_files(inst: Installation, settings: BrokerSettings) -> tuple[BrokerSettings, bool]:
    service = RevocationService(inst)
    changed = _write_if_changed(settings.path("ca.pem"), _trust(inst))
    changed |= _write_if_changed(settings.path("crl.pem"), _crls(service))
    if _needs_certificate(inst, settings, settings.serial, "broker"):
        serial = _issue_certificate(inst, settings, settings.serial, "broker", settings.names)
        settings = BrokerSettings(**{**asdict(settings), "serial": serial})
        changed = True
    previous = settings.provisioner_serial
    if _needs_certificate(inst, settings, previous, "provisioner"):
        serial = _issue_certificate(
            inst, settings, previous, "provisioner", (settings.provisioner,)
        )
        settings = BrokerSettings(**{**asdict(settings), "provisioner_serial": serial})
    return settings, changed


def refresh(inst: Installation, directory: Path) -> bool:
    """Bring the broker's files up to date and make it reload if any changed."""
    settings = BrokerSettings.load(directory)
    settings, changed = _refresh_files(inst, settings)
    settings.save()
    if changed:
        reload(settings)
    return changed


def reload(settings: BrokerSettings) -> None:
    """Make the broker re-read its files: the reload command, or SIGHUP to its process."""
    if settings.reload_command:
        done = subprocess.run(
            shlex.split(settings.reload_command), check=False, timeout=60, capture_output=True
        )
        if done.returncode != 0:
            raise ConfigError(f"broker reload command exited with {done.returncode}")
    elif settings.pid_file is not None and settings.pid_file.is_file():
        try:
            os.kill(int(settings.pid_file.read_text().strip()), signal.SIGHUP)
        except (ValueError, ProcessLookupError) as exc:
            raise ConfigError(f"cannot signal the broker in {settings.pid_file}: {exc}") from exc
    else:
        log.warning("broker files changed but no pid_file or reload_command is set")
