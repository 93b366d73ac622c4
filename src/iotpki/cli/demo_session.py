"""``iotpki demo``: the whole secure channel on one machine, started and cleaned up in one go.

A server on a temporary data directory (EST over HTTPS, the CRL publication job), a mosquitto
broker configured by :mod:`iotpki.services.broker` (each CRL publication runs
``iotpki broker refresh``), N device agents that enroll over EST (or, with ``--via mqtt``,
through the broker with a batch's claim certificate) and publish signed telemetry
over mutual TLS with :mod:`iotpki.net.tls`, and a subscriber that verifies every message.
Midway one device is revoked (its messages are rejected and its next connection is refused),
then the root is rolled over while the devices keep publishing: the agents renew from the
successor CA, adopt the new root through the cross-certificate, and reconnect without a failed
connection.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import queue
import secrets
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.enums import CallbackAPIVersion

from iotpki.agent import Agent, AgentConfig
from iotpki.core.models import BootstrapKind, KeyAlgorithm, RevocationReason
from iotpki.core.rollover import retire_root, roll_root
from iotpki.errors import ConfigError, PeerRefused
from iotpki.messages import MessageSigner, MessageVerifier
from iotpki.net.asgi_tls import TLSExtensionProtocol
from iotpki.net.revocation_check import CrlCache, RevocationChecker
from iotpki.net.tls import Channel, Identity
from iotpki.server import Service, build_https_app, enrollment, ensure_tls_identity, https_context
from iotpki.services.broker import BrokerSettings, refresh, write_config
from iotpki.services.installation import Installation, open_installation
from iotpki.services.mqtt import issue_claim, provisioning_service
from iotpki.settings import CONFIG_FILE, MqttSettings, Settings, load_settings

__all__ = ["DemoOptions", "Summary", "child_environment", "run_demo"]

log = logging.getLogger(__name__)

Report = Callable[[str], None]
_TOPIC = "devices/{}/telemetry"
_VERIFIER = "verifier"
_ENV_PREFIX = "IOTPKI_"


@dataclass(frozen=True)
class DemoOptions:
    """How big and how fast the demo runs."""

    devices: int = 24
    interval: float = 0.25  # seconds between two messages of one device
    round_messages: int = 8  # a device reconnects (a new TLS handshake) after this many
    timeout: float = 60.0  # the longest any phase may take
    keep: Path | None = None  # keep the data directory here instead of deleting it
    via: str = "est"  # how the agents enroll and renew: "est" (HTTPS) or "mqtt" (the broker)


@dataclass
class Summary:
    """What happened, for the closing table."""

    enrolled: int = 0
    via: str = "EST"
    renewed: int = 0
    adopted_new_root: int = 0
    connections: int = 0
    failed_connections: int = 0  # of devices in good standing: must stay 0
    refused: int = 0  # connections of the revoked device refused by the broker
    published: int = 0
    verified: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    revoked_device: str = ""
    new_root_devices: int = 0  # devices whose messages verified with a successor certificate

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (what, figure) rows."""
        rejected = ", ".join(f"{k}: {v}" for k, v in sorted(self.rejected.items())) or "0"
        return [
            (f"devices enrolled over {self.via}", str(self.enrolled)),
            ("identities renewed during the rollover", str(self.renewed)),
            ("agents that adopted the new root", str(self.adopted_new_root)),
            ("devices publishing under the new root", str(self.new_root_devices)),
            ("mutual-TLS connections", str(self.connections)),
            ("failed connections (devices in good standing)", str(self.failed_connections)),
            (f"connections of revoked {self.revoked_device} refused", str(self.refused)),
            ("signed messages published", str(self.published)),
            ("messages verified", str(self.verified)),
            ("messages rejected", rejected),
        ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def _https_server(service: Service, port: int) -> Iterator[None]:
    """The HTTPS listener (EST) and the revocation jobs, in this process."""
    inst = service.installation
    key_path, cert_path = ensure_tls_identity(inst)
    context = https_context(inst, key_path, cert_path)
    server = _Server(
        uvicorn.Config(
            build_https_app(service),
            host="127.0.0.1",
            port=port,
            http=TLSExtensionProtocol,
            ssl_context_factory=lambda _config, _default: context,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started, 20, "the HTTPS server did not start")
    service.revocation.start()
    try:
        yield
    finally:
        service.revocation.stop()
        server.should_exit = True
        thread.join(timeout=10)


def child_environment(home: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of the processes the demo starts: the caller's, with the demo's home."""
    # A user's IOTPKI_PASSPHRASE or IOTPKI_HOME must never reach the throwaway installation.
    env = {k: v for k, v in environ.items() if not k.startswith(_ENV_PREFIX)}
    env[_ENV_PREFIX + "HOME"] = str(home)
    return env


@contextlib.contextmanager
def _mosquitto(
    settings: BrokerSettings, env: Mapping[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).is_file():
        raise ConfigError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    log_file = settings.path("mosquitto.log").open("wb")
    process = subprocess.Popen(
        [binary, "-c", str(settings.path("mosquitto.conf"))],
        stdout=log_file,
        stderr=log_file,
        env=env,
    )
    assert settings.pid_file is not None
    settings.pid_file.write_text(str(process.pid))

    def listening() -> bool:
        if process.poll() is not None:
            raise ConfigError(f"mosquitto exited; see {settings.path('mosquitto.log')}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", settings.port), timeout=0.2).close()
            return True
        return False

    try:
        _wait(listening, 10, "mosquitto did not start listening")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


def _wait(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise ConfigError(f"demo: {what} within {timeout:.0f}s")
        time.sleep(0.05)


def _connect(name: str, context: ssl.SSLContext, port: int) -> mqtt.Client | None:
    """An MQTT connection over mutual TLS, or None when the broker refuses it."""
    connected: queue.Queue[bool] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{secrets.token_hex(3)}")
    client.tls_set_context(context)
    client.on_connect = lambda c, u, f, reason, p: connected.put(not reason.is_failure)
    client.on_disconnect = lambda c, u, f, reason, p: connected.put(False)
    try:
        client.connect("127.0.0.1", port, keepalive=30)
    except (OSError, ssl.SSLError):
        return None
    client.loop_start()
    try:
        ok = connected.get(timeout=10)
    except queue.Empty:
        ok = False
    if not ok:
        client.loop_stop()
        with contextlib.suppress(Exception):
            client.disconnect()
        return None
    return client


class _Fleet:
    """The running demo: shared counters and the devices' and verifier's threads."""

    def __init__(self, inst: Installation, broker: BrokerSettings, options: DemoOptions):
        self.inst, self.broker, self.options = inst, broker, options
        self.summary = Summary()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.revoked: str | None = None
        self.hold: set[str] = set()  # devices that keep their connection until released
        self.by_device: Counter[str] = Counter()
        self.successor_cas: set[x509.Name] = set()
        self.on_successor: set[str] = set()
        self.refused_devices: set[str] = set()
        self.threads: list[threading.Thread] = []

    # -- the verifying subscriber ---------------------------------------------------------

    def _anchors(self) -> list[x509.Certificate]:
        certs = x509.load_pem_x509_certificates(self.broker.path("ca.pem").read_bytes())
        return [c for c in certs if c.issuer == c.subject]

    def start_verifier(self, identity: Identity) -> None:
        """Subscribe to every device's topic and verify each message."""
        cas = lambda: x509.load_pem_x509_certificates(self.broker.path("ca.pem").read_bytes())  # noqa: E731
        verifier = MessageVerifier(
            self._anchors,
            revocation=RevocationChecker(
                CrlCache(issuers=cas, directories=[self.inst.home / "crl"], poll_seconds=0.5)
            ),
        )
        channel = Channel("client", trust=self.broker.path("ca.pem"), identity=identity)
        client = _connect(_VERIFIER, channel.context(), self.broker.port)
        if client is None:
            raise ConfigError("demo: the verifier could not connect to the broker")

        def on_message(c: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
            try:
                verified = verifier.verify(bytes(message.payload))
            except PeerRefused as exc:
                with self.lock:
                    self.summary.rejected[exc.reason] += 1
                return
            with self.lock:
                self.summary.verified += 1
                self.by_device[verified.device_id] += 1
                if verified.certificate.issuer in self.successor_cas:
                    self.on_successor.add(verified.device_id)

        subscribed = threading.Event()
        client.on_message = on_message
        client.on_subscribe = lambda *args: subscribed.set()
        client.subscribe("devices/#", qos=1)
        if not subscribed.wait(10):
            raise ConfigError("demo: the verifier could not subscribe")
        self.verifier_client = client

    # -- devices --------------------------------------------------------------------------

    def start_device(self, agent: Agent) -> None:
        """Publish signed telemetry until stopped, reconnecting every round."""
        thread = threading.Thread(target=self._device, args=(agent,), daemon=True)
        thread.start()
        self.threads.append(thread)

    def _device(self, agent: Agent) -> None:
        name = agent.config.device_id
        state = agent.config.state_dir
        channel = Channel("client", trust=state / "trust.pem", identity=Identity.of_agent(state))
        while not self.stop.is_set():
            client = _connect(name, channel.context(), self.broker.port)
            with self.lock:
                self.summary.connections += 1
                if client is None and name == self.revoked:
                    self.summary.refused += 1
                    self.refused_devices.add(name)
                elif client is None:
                    self.summary.failed_connections += 1
                    log.warning("device %s: connection failed", name)
            if client is None:
                if name == self.revoked:
                    return  # shut out of the fleet
                self.stop.wait(self.options.interval)
                continue
            self._publish_round(name, client, state)
            client.loop_stop()
            client.disconnect()

    def _publish_round(self, name: str, client: mqtt.Client, state: Path) -> None:
        identity = Identity.of_agent(state)
        chain = x509.load_pem_x509_certificates(identity.chain.read_bytes())
        key = serialization.load_pem_private_key(identity.key.read_bytes(), None)
        signer = MessageSigner(key, chain)  # type: ignore[arg-type]
        sent = 0
        while not self.stop.is_set() and (sent < self.options.round_messages or name in self.hold):
            payload = json.dumps({"device": name, "seq": sent, "t": time.time()}).encode()
            info = client.publish(_TOPIC.format(name), signer.sign(payload), qos=1)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(5)
            if info.is_published():
                with self.lock:
                    self.summary.published += 1
            sent += 1
            self.stop.wait(self.options.interval)

    def shutdown(self) -> None:
        """Stop the devices and the verifier."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
        client = getattr(self, "verifier_client", None)
        if client is not None:
            client.loop_stop()
            client.disconnect()


def _settings(home: Path, https_port: int, broker_dir: Path) -> Settings:
    """Settings written to the home, so that the publish command's ``iotpki`` reads them too."""
    command = [sys.executable, "-m", "iotpki.cli", "--home", str(home), "broker", "refresh"]
    refresh = shlex.join([*command, "--dir", str(broker_dir)])
    values = {
        "passphrase": secrets.token_urlsafe(16),
        "https_port": https_port,
        "lint_background": False,
    }
    revocation = {"revocation_delay": "1s", "full_crl_delay": "1s", "publish_command": refresh}
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    lines += ["[revocation]", *(f"{k} = {json.dumps(v)}" for k, v in revocation.items())]
    fd = os.open(home / CONFIG_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:  # it holds the passphrase: the owner's only
        handle.write("\n".join(lines) + "\n")
    return load_settings(home, environ={})


def _agent_config(
    home: Path, url: str, device: str, secret: str | None, root_fp: str, claim: Path | None
) -> AgentConfig:
    """An agent enrolling with a one-time secret over EST, or with a claim over MQTT."""
    return AgentConfig(
        server=url,
        device_id=device,
        state_dir=home / "agents" / device,
        ca_fingerprint=root_fp,
        enrollment_secret=secret,
        claim_cert=None if claim is None else claim / "claim.pem",
        claim_key=None if claim is None else claim / "claim.key",
        timeout=30.0,
    )


def _claims(inst: Installation) -> None:
    """A claim CA for the devices ``device-NNN`` and the batch ``demo-batch``'s certificate."""
    inst.authority.create_issuing(
        "claims",
        parent="root",
        common_name="iotpki Demo Claims CA",
        algorithm=KeyAlgorithm.P256,
        lifetime=timedelta(days=365),
        backend="file",
        actor="demo",
    )
    enrollment(inst).add_bootstrap_ca(
        "demo-line",
        inst.authority.get_ca("claims").certificate,
        enroll_policy="any",
        kind=BootstrapKind.CLAIM,
        device_pattern="device-[0-9]{3}",
        actor="demo",
    )
    issue_claim(inst, "demo-batch", "claims", inst.home / "claim", actor="demo")


@contextlib.contextmanager
def _provisioning(inst: Installation, broker: BrokerSettings) -> Iterator[None]:
    """The provisioning service on the broker, connected."""
    settings = MqttSettings(
        broker_url=f"mqtts://127.0.0.1:{broker.port}", client_dir=broker.directory
    )
    service = provisioning_service(inst, enrollment(inst), settings)
    service.start()
    try:
        _wait(service.connected.is_set, 30, "the provisioning service connecting to the broker")
        yield
    finally:
        service.stop()


def _leaf_identity(inst: Installation, directory: Path, name: str) -> Identity:
    """The verifier's own client identity, issued directly by the authority."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    issued = inst.authority.issue(csr, profile="device", actor="demo")
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    (directory / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (directory / "chain.pem").write_bytes(b"".join(c.public_bytes(pem) for c in issued.chain))
    return Identity(directory / "chain.pem", directory / "key.pem")


def run_demo(options: DemoOptions, report: Report) -> Summary:
    """Run every phase of the demo and clean up; the summary of what happened."""
    if options.devices < 2:
        raise ConfigError("the demo needs at least two devices")
    home = Path(tempfile.mkdtemp(prefix="iotpki-demo-"))
    try:
        return _run(home, options, report)
    finally:
        if options.keep is not None:
            shutil.copytree(home, options.keep, dirs_exist_ok=True, ignore_dangling_symlinks=True)
        shutil.rmtree(home, ignore_errors=True)


def _run(home: Path, options: DemoOptions, report: Report) -> Summary:
    https_port = _free_port()
    broker_dir = home / "broker"
    inst = open_installation(_settings(home, https_port, broker_dir), create=True)
    try:
        inst.initialise(actor="demo")
        report(f"installation initialised in {home}")
        if options.via == "mqtt":
            _claims(inst)  # before the broker's files: its CA file must hold the claim CA
        broker = write_config(
            inst,
            BrokerSettings(
                directory=broker_dir,
                port=_free_port(),
                readers=(_VERIFIER,),
                pid_file=broker_dir / "mosquitto.pid",
                user=getpass.getuser(),  # the temporary directory is private to this user
            ),
        )
        env = child_environment(home, os.environ)
        service = Service(inst, command_env=env)
        with contextlib.ExitStack() as stack:
            stack.enter_context(_https_server(service, https_port))
            stack.enter_context(_mosquitto(broker, env))
            report(f"EST on https://127.0.0.1:{https_port}, mosquitto on 127.0.0.1:{broker.port}")
            url = f"https://127.0.0.1:{https_port}"
            if options.via == "mqtt":
                stack.enter_context(_provisioning(inst, broker))
                url = f"mqtts://127.0.0.1:{broker.port}"
                report("provisioning over MQTT: claim CA and batch claim certificate, service up")
            fleet = _Fleet(inst, broker, options)
            try:
                _phases(inst, service, fleet, url, report)
            finally:
                fleet.shutdown()
            return fleet.summary
    finally:
        inst.close()


def _phases(inst: Installation, service: Service, fleet: _Fleet, url: str, report: Report) -> None:
    options, summary = fleet.options, fleet.summary
    root = inst.authority.chain(inst.authority.default_issuing_ca())[-1]
    fingerprint = root.fingerprint(hashes.SHA256()).hex()
    enroll = enrollment(inst)
    names = [f"device-{i:03d}" for i in range(options.devices)]
    over_mqtt = options.via == "mqtt"
    claim = inst.home / "claim" if over_mqtt else None

    def secret(name: str) -> str | None:
        return None if over_mqtt else enroll.create_secret(name, actor="demo")[0]

    agents = [Agent(_agent_config(inst.home, url, n, secret(n), fingerprint, claim)) for n in names]
    with ThreadPoolExecutor(max_workers=min(16, len(agents))) as pool:
        for _ in pool.map(lambda a: a.enroll(), agents):
            summary.enrolled += 1
    if over_mqtt:
        summary.via = "MQTT"
        report(f"{summary.enrolled} agents enrolled over MQTT (batch claim certificate, P-256)")
    else:
        report(f"{summary.enrolled} agents enrolled over EST (one-time secrets, P-256 keys)")

    fleet.start_verifier(_leaf_identity(inst, inst.home / "verifier", _VERIFIER))
    for agent in agents:
        fleet.start_device(agent)
    _wait(
        lambda: all(fleet.by_device[n] >= 2 for n in names), options.timeout, "all devices verified"
    )
    report(
        f"all {len(names)} devices publish signed telemetry over mutual TLS; "
        f"verified so far: {summary.verified}"
    )

    victim = agents[0]
    identity = victim.store.load()
    assert identity is not None
    fleet.hold.add(victim.config.device_id)  # its open connection goes on publishing
    fleet.revoked = summary.revoked_device = victim.config.device_id
    inst.authority.revoke(
        format(identity.certificate.serial_number, "x"),
        reason=RevocationReason.KEY_COMPROMISE,
        actor="demo",
    )
    report(f"revoked {victim.config.device_id}; waiting for the CRL publication")
    _wait(
        lambda: summary.rejected["revoked"] > 0,
        options.timeout,
        "the verifier rejecting the revoked device",
    )
    report(f"the verifier rejects {victim.config.device_id}'s messages (revoked)")
    fleet.hold.clear()
    _wait(lambda: summary.refused > 0, options.timeout, "the broker refusing the revoked device")
    report(f"the broker refuses {victim.config.device_id}'s new connection (CRL reloaded)")

    _rollover(inst, service, fleet, agents[1:], report)


def _rollover(
    inst: Installation, service: Service, fleet: _Fleet, agents: list[Agent], report: Report
) -> None:
    summary, options = fleet.summary, fleet.options
    done = roll_root(
        inst.authority, "root", new_root="root-g2", overlap=timedelta(days=7), actor="demo"
    )
    for name in (done.new_root, *done.successors.values()):
        service.revocation.publisher.generate(name, "full", actor="demo")
    service.revocation.reload_crls()  # runs `iotpki broker refresh`: new CA file, certificate
    fleet.successor_cas = {
        inst.authority.get_ca(s).certificate.subject for s in done.successors.values()
    }
    report("root rolled over: new root, cross-certificates, successor issuing CA; broker reloaded")

    def renew(agent: Agent) -> None:
        # Trust first: the renewed certificate chains to the successor under the new root,
        # which the agent accepts from cacerts through the cross-certificate.
        adopted = agent.refresh_trust()
        agent.renew()
        with fleet.lock:
            summary.renewed += 1
            summary.adopted_new_root += 1 if adopted else 0

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(renew, agents))
    report(f"{summary.renewed} agents renewed from the successor CA and adopted the new root")
    names = {a.config.device_id for a in agents}
    _wait(lambda: names <= fleet.on_successor, options.timeout, "every device on the new root")
    retire_root(inst.authority, "root", actor="demo", force=True)  # the overlap, shortened
    service.revocation.reload_crls()
    refresh(inst, fleet.broker.directory)
    summary.new_root_devices = len(fleet.on_successor)
    before = summary.verified
    _wait(
        lambda: summary.verified >= before + len(names), options.timeout, "traffic after retirement"
    )
    report("old root retired; the fleet keeps publishing under the new root")
