"""Composition root: builds the HTTPS and HTTP applications and runs both listeners.

HTTPS (:8443) carries the admin API and the enrollment protocols that authenticate devices by
TLS client certificate; HTTP (:8080) carries what relying parties fetch without TLS: CA
certificates, CRLs, OCSP, SCEP. Both answer ``/healthz`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from iotpki.api import api_routes
from iotpki.api.acme import acme_admin_routes
from iotpki.api.akca import akca_routes
from iotpki.api.enrollment import enrollment_api_routes
from iotpki.api.monitoring import monitoring_api_routes
from iotpki.api.routes import AdminApi
from iotpki.api.scep import scep_api_routes
from iotpki.core.authenticators import ENROLLMENT_KEY
from iotpki.core.encoding import pem
from iotpki.core.enrollment import Enrollment, EnrollmentConfig
from iotpki.core.models import CAStatus
from iotpki.core.policy import INTERNAL_SERVER_PROFILE
from iotpki.core.scep import ScepService
from iotpki.errors import ConfigError, IotpkiError, KeyMissing
from iotpki.files import write_private
from iotpki.monitoring.metrics import CONTENT_TYPE_LATEST, Metrics, route_label
from iotpki.monitoring.service import Monitor
from iotpki.net.asgi_tls import TLSExtensionProtocol
from iotpki.protocols import acme, aia
from iotpki.protocols import cmp as cmp_protocol
from iotpki.protocols import crl as crl_protocol
from iotpki.protocols import ocsp as ocsp_protocol
from iotpki.protocols import scep as scep_protocol
from iotpki.protocols.client_cert import ClientCertSource
from iotpki.protocols.est.routes import est_routes
from iotpki.protocols.est.tls import trust_bootstrap_cas
from iotpki.protocols.http import blocking
from iotpki.protocols.mqtt.service import ProvisioningService
from iotpki.protocols.scep.responder import CrlSource, ScepResponder
from iotpki.services.attestation import AKCA_SECRET, AkcaService, EkRoots
from iotpki.services.installation import Installation
from iotpki.services.jobs import JobScope
from iotpki.services.mqtt import provisioning_service
from iotpki.services.revocation import RevocationService
from iotpki.store.acme import SqlAcmeStore
from iotpki.web import web_routes

__all__ = [
    "Service",
    "bind",
    "build_http_app",
    "build_https_app",
    "check_keys",
    "ensure_tls_identity",
    "run_jobs",
    "serve",
]

log = logging.getLogger(__name__)

_TLS_DIR = "tls"


@dataclass
class Service:
    """What every adapter is given: the installation and the process's metrics.

    ``command_env`` is the environment of the commands the server runs (the CRL publish
    command); None passes this process's own.
    """

    installation: Installation
    metrics: Metrics = field(default_factory=Metrics)
    command_env: Mapping[str, str] | None = None
    revocation: RevocationService = field(init=False)
    scep: ScepService = field(init=False)
    monitor: Monitor = field(init=False)

    def __post_init__(self) -> None:
        self.installation.authority.subscribe(self.metrics.on_event)
        self.revocation = RevocationService(self.installation, command_env=self.command_env)
        self.scep = scep_service(self.installation)
        self.monitor = Monitor(self.installation, self.metrics)
        self.installation.authority.subscribe(self.monitor.on_event)


class _TimingMiddleware:
    """Observes request latency per listener and matched route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics, listener: str) -> None:
        self.app = app
        self.metrics = metrics
        self.listener = listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.latency.labels(self.listener, route_label(scope)).observe(elapsed)


def _common_routes(service: Service) -> list[BaseRoute]:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(_: Request) -> Response:
        inst = service.installation
        cas = await blocking(inst.authority.list_cas)
        service.metrics.update_cas(cas, inst.authority.clock.now())
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


async def _not_found(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("not found", status_code=404)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal", "message": "internal error"}, status_code=500)


def _app(routes: Sequence[BaseRoute], service: Service, listener: str) -> ASGIApp:
    app = Starlette(
        routes=list(routes),
        exception_handlers={404: _not_found, Exception: _internal_error},
    )
    return _TimingMiddleware(app, service.metrics, listener)


def build_https_app(service: Service) -> ASGIApp:
    """The application behind the HTTPS listener."""
    # Device-facing protocols first: Starlette tries routes in order, and they carry the load.
    routes = _est_routes(service.installation) + _acme_routes(service.installation)
    routes += _cmp_routes(service.installation)
    routes += _common_routes(service) + api_routes(service.installation.authority)
    routes += scep_api_routes(service.scep)
    routes += _akca_routes(service.installation)
    routes += monitoring_api_routes(AdminApi(service.installation.authority), service.monitor)
    routes += web_routes(service.monitor, service.revocation.publisher.status)
    return _TlsUsageMiddleware(_app(routes, service, "https"), service.monitor)


class _TlsUsageMiddleware:
    """Records each client certificate seen on the HTTPS listener as usage evidence."""

    def __init__(self, app: ASGIApp, monitor: Monitor) -> None:
        self.app = app
        self.monitor = monitor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or []
            if chain:
                client = scope.get("client")
                self.monitor.observe_tls(chain[0], client[0] if client else None)
        await self.app(scope, receive, send)


def _acme_routes(inst: Installation) -> list[BaseRoute]:
    store = SqlAcmeStore(inst.store)
    context = acme.build_context(
        inst.authority, store, inst.settings, inst.store, inst.secrets.get(acme.NONCE_SECRET)
    )
    profiles = inst.settings.resolved_profiles()
    return acme.acme_routes(context) + acme_admin_routes(inst.authority, store, profiles)


def _akca_routes(inst: Installation) -> list[BaseRoute]:
    """The AK CA endpoints (issue 9): unauthenticated, proven by TPM credential activation."""
    secret = inst.secrets.get(AKCA_SECRET)
    ek_roots = EkRoots(inst.store, inst.home)
    service = AkcaService(inst.settings, inst.authority, ek_roots, secret, inst.store)
    per_minute = inst.settings.attestation.akca_requests_per_minute
    return akca_routes(service, inst.authority, inst.store, per_minute=per_minute)


def enrollment(inst: Installation) -> Enrollment:
    """The installation's device enrollment service (EST and its admin API)."""
    config = EnrollmentConfig(retry_after=inst.settings.est_retry_after)
    return Enrollment(inst.authority, config, inst.secrets.get(ENROLLMENT_KEY))


def _cmp_routes(inst: Installation) -> list[BaseRoute]:
    """CMP on either listener: its messages protect themselves."""
    signers = cmp_protocol.Signers(inst.authority, inst.store, inst.keys["file"])
    return cmp_protocol.routes(cmp_protocol.CmpResponder(enrollment(inst), inst.store, signers))


def _est_routes(inst: Installation) -> list[BaseRoute]:
    service = enrollment(inst)
    peers = ClientCertSource.from_settings(
        inst.settings.trusted_proxies, inst.settings.client_cert_header
    )
    return est_routes(service, peers) + enrollment_api_routes(service)


def build_http_app(service: Service) -> ASGIApp:
    """The application behind the plain-HTTP listener."""
    routes = _common_routes(service) + aia.routes(service.installation.authority)
    routes += crl_protocol.routes(service.revocation)
    ocsp = ocsp_protocol.OcspEndpoint(service.revocation.responder, service.installation.authority)
    routes += ocsp_protocol.routes(ocsp)
    routes += scep_protocol.routes(
        ScepResponder(service.scep, service.installation.store, _crl_source(service.revocation))
    )
    routes += _cmp_routes(service.installation)
    # Cached OCSP answers skip routing and timing: the hot path only looks up bytes.
    return ocsp_protocol.OcspFastPath(_app(routes, service, "http"), ocsp)


def scep_service(inst: Installation) -> ScepService:
    """The installation's SCEP state: challenge passwords, transactions, RA certificates."""
    return ScepService(inst.authority, inst.keys, inst.settings.resolved_profiles())


def _crl_source(revocation: RevocationService) -> CrlSource:
    def current(ca_name: str) -> bytes | None:
        record = revocation.publisher.current(ca_name, "full")
        return None if record is None else record.der

    return current


def ensure_tls_identity(inst: Installation) -> tuple[Path, Path]:
    """The HTTPS listener's key and certificate chain, issued by the installation's own CA.

    Issued on first start and again when a third of its life remains or the configured server
    names changed.
    """
    directory = inst.home / _TLS_DIR
    key_path, cert_path = directory / "server.key", directory / "server.pem"
    names = list(inst.settings.server_names)
    if cert_path.is_file() and key_path.is_file():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        now = inst.authority.clock.now()
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        if cert.not_valid_after_utc - now > life / 3 and _server_names(cert) == sorted(names):
            return key_path, cert_path
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    issued = inst.authority.issue(csr, profile=INTERNAL_SERVER_PROFILE, actor="server:tls")
    write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_private(cert_path, pem(issued.chain))
    return key_path, cert_path


def _general_name(name: str) -> x509.GeneralName:
    import ipaddress

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _server_names(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return sorted(str(n.value) for n in sans)


def https_context(inst: Installation, key_path: Path, cert_path: Path) -> ssl.SSLContext:
    """Server TLS context: TLS 1.2+, client certificates requested and checked if sent."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    context.verify_mode = ssl.CERT_OPTIONAL
    _trust_installation_cas(context, inst, set())
    trust_bootstrap_cas(context, enrollment(inst))
    return context


_ANCHOR_REFRESH_SECONDS = 5.0


def _trust_installation_cas(
    context: ssl.SSLContext, inst: Installation, loaded: set[bytes]
) -> None:
    """Add CA certificates not loaded yet (new CAs, rollover cross-certificates) to the anchors."""
    new = [
        ca.certificate
        for ca in inst.authority.list_cas()
        if ca.certificate_der is not None and ca.certificate_der not in loaded
    ]
    if new:
        context.load_verify_locations(cadata=pem(new).decode())
        loaded.update(c.public_bytes(serialization.Encoding.DER) for c in new)


def keep_client_anchors(context: ssl.SSLContext, inst: Installation, stop: threading.Event) -> None:
    """Keep the live HTTPS context's client-certificate anchors current until ``stop``.

    OpenSSL's certificate store takes additions while handshakes run, so established
    connections are untouched and new handshakes see new CAs within a few seconds.
    """
    loaded_cas: set[bytes] = set()
    loaded_bootstrap: set[str] = set()
    while True:
        try:
            _trust_installation_cas(context, inst, loaded_cas)
            loaded_bootstrap = trust_bootstrap_cas(context, enrollment(inst), loaded_bootstrap)
        except Exception:
            log.exception("refreshing the client-certificate anchors failed")
        if stop.wait(_ANCHOR_REFRESH_SECONDS):
            return


class _Listener(uvicorn.Server):
    """A uvicorn server whose signals are handled by ``serve`` for both listeners."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _background_lint(inst: Installation, stop: threading.Event) -> None:
    """Lint issued certificates in the background, keeping findings for the report."""
    while not stop.is_set():
        try:
            done = inst.authority.lint_pending()
        except Exception:
            log.exception("background lint failed")
            done = 0
        stop.wait(0.5 if done else 5.0)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; a taken port or bad address is a ConfigError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        if exc.errno and exc.errno > 0:
            reason = os.strerror(exc.errno)
        elif exc.errno:  # a resolver (EAI_*) code
            reason = "the address does not resolve"
        else:
            reason = str(exc)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from exc


def check_keys(inst: Installation) -> None:
    """Unlock the key of every active CA held here, so a wrong passphrase or PIN stops a start."""
    for ca in inst.authority.list_cas():
        backend = inst.keys.get(ca.key_backend or "")
        if ca.status is not CAStatus.ACTIVE or backend is None or ca.key_ref is None:
            continue
        try:
            backend.signer(ca.key_ref)
        except KeyMissing as exc:
            raise ConfigError(f"the key of CA {ca.name!r} is missing: {exc.message}") from exc
        except IotpkiError as exc:
            # One short line: the file backend's own message, naming the key, wraps.
            file_backend = ca.key_backend == "file"
            why = "wrong passphrase or damaged key" if file_backend else exc.message
            raise ConfigError(f"cannot unlock CA {ca.name!r}: {why}") from exc


def _configure_logging(access_log: bool) -> None:
    """One log line per event, through the root handler: uvicorn's start and stop notices (one
    per listener) are replaced by ``serve``'s own line; with ``access_log``, one per request."""
    logging.getLogger("uvicorn").handlers = []
    logging.getLogger("uvicorn").propagate = True
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.setLevel(logging.INFO)
    access.propagate = access_log


def serve(
    inst: Installation,
    https_socket: socket.socket,
    http_socket: socket.socket,
    *,
    access_log: bool = False,
    on_ready: Callable[[], None] | None = None,
    jobs: JobScope = "all",
) -> None:
    """Run both listeners on their bound sockets until SIGINT or SIGTERM.

    ``on_ready`` is called once both listeners accept connections. ``jobs`` says which
    background jobs run here: ``all`` in a single process, ``process`` in a request worker
    whose installation-wide jobs run in a job worker (:func:`run_jobs`).
    """
    service = Service(inst)
    key_path, cert_path = ensure_tls_identity(inst)
    tls = https_context(inst, key_path, cert_path)
    common: dict[str, Any] = {
        "log_config": None,
        "log_level": None,
        # per-request lines cost a third of a core; /metrics counts requests anyway
        "access_log": access_log,
        "lifespan": "off",
    }
    https = uvicorn.Config(
        build_https_app(service),
        http=TLSExtensionProtocol,
        ssl_context_factory=lambda _config, _default: tls,
        **common,
    )
    http = uvicorn.Config(build_http_app(service), http="httptools", **common)
    _configure_logging(access_log)
    listeners = [(_Listener(https), https_socket), (_Listener(http), http_socket)]
    stop = threading.Event()
    if inst.settings.lint_background and jobs != "process":
        threading.Thread(target=_background_lint, args=(inst, stop), daemon=True).start()
    threading.Thread(target=keep_client_anchors, args=(tls, inst, stop), daemon=True).start()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        servers = [listener for listener, _ in listeners]
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, _stop_all, servers)
        tasks = [asyncio.create_task(srv.serve(sockets=[sock])) for srv, sock in listeners]
        while not all(srv.started for srv in servers) and not any(t.done() for t in tasks):
            await asyncio.sleep(0.01)
        if all(srv.started for srv in servers) and on_ready is not None:
            on_ready()
        await asyncio.gather(*tasks)

    service.revocation.start(jobs)
    monitoring_jobs = service.monitor.jobs()
    monitoring_jobs.start(jobs)
    provisioning = None
    try:
        if jobs != "process":
            provisioning = _provisioning(inst)  # a ConfigError stops the jobs again
        uvloop.run(main())
    finally:
        stop.set()
        if provisioning is not None:
            provisioning.stop()
        service.revocation.stop()
        monitoring_jobs.stop()
        for _, sock in listeners:
            sock.close()


def _provisioning(inst: Installation) -> ProvisioningService | None:
    """The provisioning service over MQTT, started, when ``[mqtt] broker_url`` is set."""
    if inst.settings.mqtt.broker_url is None:
        return None
    service = provisioning_service(inst, enrollment(inst))
    service.start()
    return service


def run_jobs(inst: Installation) -> None:
    """The installation's background work, without listeners, until SIGINT or SIGTERM:
    linting issued certificates, CRL publication, scans, webhook deliveries, folded refusals.

    Each job takes its cross-process lock, so any number of job workers (one per replica, or
    ``iotpki worker`` processes) run each job once at a time.
    """
    stopped = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stopped.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    service = Service(inst)
    if inst.settings.lint_background:
        threading.Thread(target=_background_lint, args=(inst, stopped), daemon=True).start()
    service.revocation.start("installation")
    monitoring_jobs = service.monitor.jobs()
    monitoring_jobs.start("installation")
    provisioning = None
    try:
        provisioning = _provisioning(inst)
        while not stopped.wait(0.5):
            pass
    finally:
        if provisioning is not None:
            provisioning.stop()
        service.revocation.stop()
        monitoring_jobs.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_all(listeners: list[_Listener]) -> None:
    for listener in listeners:
        listener.should_exit = True
