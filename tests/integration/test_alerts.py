"""Webhook alerts against a real HTTP receiver on 127.0.0.1: the HMAC signature, retries with
back-off on the injectable clock, recorded deliveries, deduplication, refused targets."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from iotpki.core.monitoring import FindingChange, Observation
from iotpki.errors import ConfigError
from iotpki.monitoring.alerts import Alerter, next_attempt_delay, validate_webhook_url
from iotpki.monitoring.service import Monitor
from iotpki.net.egress import EgressPolicy
from iotpki.services.installation import Installation
from iotpki.store.monitoring import SqlMonitoringStore

from conftest import ManualClock, make_installation

SECRET = b"webhook-test-secret"
LOOPBACK = EgressPolicy.from_text(["127.0.0.0/8"])  # the receivers listen on 127.0.0.1


@dataclass
class Receiver:
    """A webhook receiver: answers the queued statuses (then 200) and keeps what it got."""

    url: str
    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/iotpki"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _opened(inst: Installation, store: SqlMonitoringStore, key: str) -> list[FindingChange]:
    observation = Observation(
        check="cert_expiring",
        key=key,
        severity="high",
        summary=f"certificate {key} of pump-7 expires in 3 days",
        evidence={"not_after": "2026-01-04T00:00:00+00:00"},
        serial=key,
        device_id="pump-7",
    )
    return store.sync_findings(["cert_expiring"], [observation], inst.authority.clock.now())


def _alerter(store: SqlMonitoringStore, clock: ManualClock, url: str, attempts: int) -> Alerter:
    return Alerter(
        store, clock, targets=[url], secret=SECRET, max_attempts=attempts, egress=LOOPBACK
    )


def test_delivery_is_signed_and_recorded(
    inst: Installation, clock: ManualClock, receiver: Receiver
) -> None:
    store = SqlMonitoringStore(inst.store)
    alerter = _alerter(store, clock, receiver.url, 3)
    assert alerter.notify(_opened(inst, store, "abc1")) == 1
    assert alerter.deliver_due() == 1

    headers, body = receiver.received[0]
    timestamp = headers["x-iotpki-timestamp"]
    expected = hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["x-iotpki-signature"] == f"sha256={expected}"
    assert headers["content-type"] == "application/json"
    assert int(timestamp) == int(clock.now().timestamp())
    payload = json.loads(body)
    assert payload["event"] == "finding.opened"
    assert payload["finding"]["device_id"] == "pump-7"
    assert payload["finding"]["check"] == "cert_expiring"

    [delivery] = store.list_deliveries()
    assert (delivery.status, delivery.attempts, delivery.http_status) == ("delivered", 1, 200)
    assert delivery.delivered_at == clock.now()
    assert headers["x-iotpki-delivery"] == str(delivery.id)


def test_failures_retry_with_back_off_on_the_clock(
    inst: Installation, clock: ManualClock, receiver: Receiver
) -> None:
    store = SqlMonitoringStore(inst.store)
    alerter = _alerter(store, clock, receiver.url, 5)
    receiver.statuses = [503, 500]
    alerter.notify(_opened(inst, store, "abc2"))

    assert alerter.deliver_due() == 0  # first attempt: 503
    [delivery] = store.list_deliveries()
    assert (delivery.status, delivery.attempts, delivery.http_status) == ("pending", 1, 503)
    assert delivery.last_error == "HTTP 503"
    assert delivery.next_attempt_at == clock.now() + timedelta(seconds=30)

    assert alerter.deliver_due() == 0 and len(receiver.received) == 1  # not due yet
    clock.advance(timedelta(seconds=30))
    assert alerter.deliver_due() == 0  # second attempt: 500, then twice the wait
    assert store.list_deliveries()[0].next_attempt_at == clock.now() + timedelta(seconds=60)
    clock.advance(timedelta(seconds=59))
    assert alerter.deliver_due() == 0 and len(receiver.received) == 2
    clock.advance(timedelta(seconds=1))
    assert alerter.deliver_due() == 1
    [delivery] = store.list_deliveries()
    assert (delivery.status, delivery.attempts, delivery.http_status) == ("delivered", 3, 200)
    bodies = {body for _, body in receiver.received}
    assert len(bodies) == 1  # every attempt carries the same payload


def test_gives_up_after_max_attempts_and_records_why(
    inst: Installation, clock: ManualClock, receiver: Receiver
) -> None:
    store = SqlMonitoringStore(inst.store)
    alerter = _alerter(store, clock, receiver.url, 2)
    receiver.statuses = [500, 500, 500]
    alerter.notify(_opened(inst, store, "abc3"))
    alerter.deliver_due()
    clock.advance(next_attempt_delay(1))
    alerter.deliver_due()
    clock.advance(timedelta(days=1))
    assert alerter.deliver_due() == 0
    [delivery] = store.list_deliveries()
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert len(receiver.received) == 2


def test_unreachable_target_is_recorded_and_retried(inst: Installation, clock: ManualClock) -> None:
    store = SqlMonitoringStore(inst.store)
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    alerter = _alerter(store, clock, f"http://127.0.0.1:{port}/", 3)
    alerter.notify(_opened(inst, store, "abc4"))
    assert alerter.deliver_due() == 0
    [delivery] = store.list_deliveries()
    assert delivery.status == "pending" and delivery.http_status is None
    assert delivery.last_error is not None and "ConnectError" in delivery.last_error


def test_an_ongoing_condition_alerts_once(
    inst: Installation, clock: ManualClock, receiver: Receiver
) -> None:
    store = SqlMonitoringStore(inst.store)
    alerter = _alerter(store, clock, receiver.url, 3)
    assert alerter.notify(_opened(inst, store, "abc5")) == 1
    clock.advance(timedelta(minutes=5))
    assert alerter.notify(_opened(inst, store, "abc5")) == 0  # same state: deduplicated
    resolved = store.sync_findings(["cert_expiring"], [], clock.now())
    assert alerter.notify(resolved) == 1
    alerter.deliver_due()
    events = [json.loads(body)["event"] for _, body in receiver.received]
    assert events == ["finding.opened", "finding.resolved"]


@pytest.mark.parametrize(
    "target",
    [
        "ftp://127.0.0.1/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http:///no-host",
        "http://user:secret@127.0.0.1/hook",
        "http://127.0.0.1:99999/hook",
        "http://127.0.0.1/hook path",
        "http://127.0.0.1/h\u00f6ok",
        "http://127.0.0.1/" + "x" * 600,
    ],
)
def test_bad_webhook_targets_are_refused(target: str) -> None:
    with pytest.raises(ConfigError):
        validate_webhook_url(target)


def test_a_bad_configured_target_is_audited_and_stops_the_monitor(
    tmp_path: Path, clock: ManualClock
) -> None:
    inst = make_installation(
        tmp_path / "home", clock=clock, monitoring={"webhooks": ["gopher://127.0.0.1/x"]}
    )
    try:
        with pytest.raises(ConfigError):
            Monitor(inst)
        last = list(inst.store.audit_events())[-1]
        assert (last.action, last.target) == ("monitor.webhook.refused", "gopher://127.0.0.1/x")
        assert SqlMonitoringStore(inst.store).list_deliveries() == []
    finally:
        inst.close()


def test_deliveries_obey_the_egress_policy(
    inst: Installation, clock: ManualClock, receiver: Receiver
) -> None:
    """Without an allow for loopback the receiver on 127.0.0.1 is never contacted; the
    refusal is recorded and retried like any failure (deliveries reached any address)."""
    store = SqlMonitoringStore(inst.store)
    alerter = Alerter(store, clock, targets=[receiver.url], secret=SECRET, max_attempts=3)
    alerter.notify(_opened(inst, store, "abc6"))
    assert alerter.deliver_due() == 0
    assert receiver.received == []
    [delivery] = store.list_deliveries()
    assert delivery.status == "pending" and delivery.http_status is None
    assert delivery.last_error is not None and "egress policy" in delivery.last_error


class _Resolver:
    """Answers with ``answers`` in turn (the last one again), recording each lookup."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_a_webhook_name_is_resolved_once_and_the_vetted_address_used(
    inst: Installation, clock: ManualClock, receiver: Receiver
) -> None:
    """No DNS rebinding: one lookup per attempt, the request to the vetted address, with the
    target's name as Host header."""
    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    resolver = _Resolver(["127.0.0.1"], ["10.0.0.1"])
    store = SqlMonitoringStore(inst.store)
    target = f"http://hooks.example:{port}/hooks/iotpki"
    alerter = Alerter(
        store, clock, targets=[target], secret=SECRET, egress=LOOPBACK, resolver=resolver
    )
    alerter.notify(_opened(inst, store, "abc7"))
    assert alerter.deliver_due() == 1
    assert resolver.calls == [("hooks.example", port)]
    assert receiver.received[0][0]["host"] == f"hooks.example:{port}"


@pytest.mark.parametrize(
    "answer", [["169.254.169.254"], ["93.184.215.14", "10.0.0.1"], ["::ffff:127.0.0.1"]]
)
def test_a_webhook_name_resolving_inside_is_refused(
    inst: Installation, clock: ManualClock, answer: list[str]
) -> None:
    store = SqlMonitoringStore(inst.store)
    alerter = Alerter(
        store,
        clock,
        targets=["https://hooks.example/x"],
        secret=SECRET,
        resolver=_Resolver(answer),
    )
    alerter.notify(_opened(inst, store, "abc8"))
    assert alerter.deliver_due() == 0
    [delivery] = store.list_deliveries()
    assert delivery.last_error is not None and "egress policy" in delivery.last_error


@pytest.mark.parametrize(("allow", "delivered"), [((), 0), (("127.0.0.0/8",), 1)])
def test_the_monitor_takes_the_allow_list_from_settings(
    tmp_path: Path,
    clock: ManualClock,
    receiver: Receiver,
    allow: tuple[str, ...],
    delivered: int,
) -> None:
    inst = make_installation(
        tmp_path / "home",
        clock=clock,
        egress_allow=list(allow),
        monitoring={"webhooks": [receiver.url]},
    )
    try:
        alerter = Monitor(inst).alerter
        alerter.notify(_opened(inst, SqlMonitoringStore(inst.store), "abc9"))
        assert alerter.deliver_due() == delivered
        assert len(receiver.received) == delivered
    finally:
        inst.close()
