"""iotpki.net.tls over real sockets: mutual TLS 1.3 with certificates from a real Authority,
CRL checking from the published CRL files, identity reload, and the peer's device ID."""

from __future__ import annotations

import socket
import ssl
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from channelkit import EchoServer, ask, issue, publish_crls, trust_pem
from iotpki.core.models import RevocationReason
from iotpki.errors import PeerRefused
from iotpki.net.revocation_check import CrlCache, RevocationChecker
from iotpki.net.tls import Channel, Identity, client_context, device_id_of, server_context
from iotpki.services.installation import Installation

from conftest import ManualClock, make_installation


def _server(
    inst: Installation, tmp_path: Path, crls: CrlCache | None
) -> tuple[Channel, EchoServer]:
    broker = issue(inst, tmp_path / "server", "127.0.0.1", profile="server")
    channel = Channel(
        "server",
        trust=lambda: trust_pem(inst),
        identity=broker.identity,
        crls=crls,
        revocation=None if crls is None else RevocationChecker(crls),
    )
    server = EchoServer(channel.context, lambda conn: channel.peer_device_id(conn).encode())
    return channel, server.start()


def _crl_cache(inst: Installation) -> CrlCache:
    cas = [ca.certificate for ca in inst.authority.list_cas() if ca.certificate_der]
    return CrlCache(issuers=lambda: cas, directories=[inst.home / "crl"], poll_seconds=0)


def _client(inst: Installation, identity: Identity) -> ssl.SSLContext:
    return client_context(trust=trust_pem(inst), identity=identity)


def test_mutual_tls_names_the_device(inst: Installation, tmp_path: Path) -> None:
    publish_crls(inst)
    _, server = _server(inst, tmp_path, _crl_cache(inst))
    try:
        device = issue(inst, tmp_path / "dev", "dev-1")
        assert ask(_client(inst, device.identity), server.port) == b"dev-1"
    finally:
        server.stop()


def test_context_defaults_are_tls13_and_mutual(inst: Installation, tmp_path: Path) -> None:
    broker = issue(inst, tmp_path / "server", "127.0.0.1", profile="server")
    context = server_context(trust=trust_pem(inst), identity=broker.identity)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert context.verify_mode is ssl.CERT_REQUIRED
    with_crl = server_context(trust=trust_pem(inst), identity=broker.identity, crls="")
    assert with_crl.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF


def test_revoked_device_refused_after_crl_publication(inst: Installation, tmp_path: Path) -> None:
    publish_crls(inst)
    channel, server = _server(inst, tmp_path, _crl_cache(inst))
    try:
        device = issue(inst, tmp_path / "dev", "dev-2")
        assert ask(_client(inst, device.identity), server.port) == b"dev-2"
        inst.authority.revoke(
            device.issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="test"
        )
        publish_crls(inst)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            answer = ask(_client(inst, device.identity), server.port)
            assert answer == b""  # TLS 1.3: the refusal may arrive as a closed connection
            raise ConnectionError("closed")
        assert "revoked" in server.next_error()
        assert channel.generation >= 2
    finally:
        server.stop()


def test_missing_crl_fails_closed(inst: Installation, tmp_path: Path) -> None:
    cas = [ca.certificate for ca in inst.authority.list_cas() if ca.certificate_der]
    empty = CrlCache(issuers=lambda: cas, directories=[tmp_path / "none"])
    _, server = _server(inst, tmp_path, empty)
    try:
        device = issue(inst, tmp_path / "dev", "dev-3")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            if ask(_client(inst, device.identity), server.port) == b"":
                raise ConnectionError("closed")
        assert "CRL" in server.next_error()
    finally:
        server.stop()


def test_foreign_ca_and_expired_certificates_refused(
    inst: Installation, tmp_path: Path, clock: ManualClock
) -> None:
    publish_crls(inst)
    _, server = _server(inst, tmp_path, _crl_cache(inst))
    other = make_installation(tmp_path / "other-home")
    try:
        foreign = issue(other, tmp_path / "foreign", "dev-4")
        context = client_context(trust=trust_pem(inst), identity=foreign.identity)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            if ask(context, server.port) == b"":
                raise ConnectionError("closed")
        assert "unable to get local issuer" in server.next_error()
        clock.advance(timedelta(days=-10))
        old = issue(inst, tmp_path / "old", "dev-5", lifetime=timedelta(days=1))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            if ask(_client(inst, old.identity), server.port) == b"":
                raise ConnectionError("closed")
        assert "expired" in server.next_error()
    finally:
        server.stop()
        other.close()


def test_server_identity_reload_keeps_established_connections(
    inst: Installation, tmp_path: Path
) -> None:
    publish_crls(inst)
    channel, server = _server(inst, tmp_path, _crl_cache(inst))
    try:
        device = issue(inst, tmp_path / "dev", "dev-6")
        first_cert = channel.context()  # noqa: F841 (the context of the first connection)
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        established = _client(inst, device.identity).wrap_socket(raw, server_hostname="127.0.0.1")
        established.sendall(b"1")
        assert established.recv(100) == b"dev-6"
        old_server_cert = x509.load_der_x509_certificate(established.getpeercert(True) or b"")
        # the service's certificate is renewed: files replaced as the agent does
        issue(inst, tmp_path / "server", "127.0.0.1", profile="server")
        raw2 = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        with _client(inst, device.identity).wrap_socket(raw2, server_hostname="127.0.0.1") as new:
            new.sendall(b"2")
            assert new.recv(100) == b"dev-6"
            new_server_cert = x509.load_der_x509_certificate(new.getpeercert(True) or b"")
        assert new_server_cert.serial_number != old_server_cert.serial_number
        established.sendall(b"3")  # the connection made before the reload still works
        assert established.recv(100) == b"dev-6"
        established.close()
    finally:
        server.stop()


def test_check_peer_refuses_revoked_without_crl_in_openssl(
    inst: Installation, tmp_path: Path
) -> None:
    """The post-handshake check alone (as used with OCSP) names the failure."""
    publish_crls(inst)
    crls = _crl_cache(inst)
    device = issue(inst, tmp_path / "dev", "dev-7")
    inst.authority.revoke(
        device.issued.record.serial, reason=RevocationReason.SUPERSEDED, actor="test"
    )
    publish_crls(inst)
    issuer = inst.authority.chain(inst.authority.default_issuing_ca())[0]
    with pytest.raises(PeerRefused) as refused:
        RevocationChecker(crls).check(device.certificate, issuer)
    assert refused.value.reason == "revoked"


def test_device_id_from_uri_san_then_common_name(inst: Installation, tmp_path: Path) -> None:
    device = issue(inst, tmp_path / "dev", "sensor-42")
    assert device_id_of(device.certificate) == "sensor-42"
    server = issue(inst, tmp_path / "srv", "broker.example", profile="server")
    assert device_id_of(server.certificate) == "broker.example"


def test_ocsp_from_the_real_responder_then_crl_fallback(
    inst: Installation, tmp_path: Path, clock: ManualClock
) -> None:
    """OcspChecker against iotpki's responder (in-process ASGI), CRL when it cannot answer."""
    from starlette.testclient import TestClient

    from iotpki.net.revocation_check import OcspChecker
    from iotpki.server import Service, build_http_app

    service = Service(inst)
    service.revocation.refresh_responders()
    http = TestClient(build_http_app(service))
    asked: list[str] = []

    def fetch(url: str, body: bytes | None) -> bytes:
        asked.append(url)
        assert body is not None and url.endswith("/ocsp")
        reply = http.post(
            "/ocsp", content=body, headers={"content-type": "application/ocsp-request"}
        )
        return reply.content

    publish_crls(inst)
    device = issue(inst, tmp_path / "dev", "dev-8")
    issuer = inst.authority.chain(inst.authority.default_issuing_ca())[0]
    checker = OcspChecker(fetch=fetch, clock=clock)
    assert checker.status(device.certificate, issuer) == "good"
    inst.authority.revoke(
        device.issued.record.serial, reason=RevocationReason.SUPERSEDED, actor="t"
    )
    clock.advance(timedelta(days=1))  # past the cached response's nextUpdate
    with pytest.raises(PeerRefused) as refused:
        RevocationChecker(None, OcspChecker(fetch=fetch, clock=clock)).check(
            device.certificate, issuer
        )
    assert refused.value.reason == "revoked"

    def unreachable(url: str, body: bytes | None) -> bytes:
        raise OSError("connection refused")

    other = issue(inst, tmp_path / "dev9", "dev-9")
    clock.advance(timedelta(days=-1))
    both = RevocationChecker(_crl_cache(inst), OcspChecker(fetch=unreachable, clock=clock))
    both.check(other.certificate, issuer)  # no OCSP answer: the CRL says good
    assert asked
