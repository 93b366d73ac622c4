"""Alerts: the log and HMAC-signed JSON webhooks, retried with exponential back-off.

An open finding alerts once per state (opened, severity changed, reopened) and once when it
resolves; each webhook delivery and each of its attempts is recorded in the store.

The receiver checks ``X-Iotpki-Signature: sha256=<hex>``, the HMAC-SHA256 of
``<X-Iotpki-Timestamp>.<body>`` under the shared secret, and refuses stale timestamps.

Deliveries obey the egress policy (:mod:`iotpki.net.egress`): the target's name is resolved once
per attempt, every address vetted, and the request sent to a vetted address with the name as
Host header and TLS server name; no proxy from the environment, no redirects followed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from datetime import timedelta
from urllib.parse import urlsplit

import httpx

from iotpki.core.monitoring import Delivery, FindingChange
from iotpki.core.ports import Clock
from iotpki.errors import ConfigError, PolicyViolation
from iotpki.net.egress import EgressPolicy, Resolver, resolve
from iotpki.store.monitoring import SqlMonitoringStore

__all__ = ["Alerter", "next_attempt_delay", "sign_payload", "validate_webhook_url"]

log = logging.getLogger("iotpki.alerts")

_BASE_DELAY = timedelta(seconds=30)
_MAX_DELAY = timedelta(hours=6)
_TIMEOUT = 10.0
_PORTS = {"http": 80, "https": 443}


def sign_payload(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value for a body sent at ``timestamp``."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def validate_webhook_url(url: str) -> str:
    """Refuse a webhook target that is not an absolute http(s) URL with a host and no
    credentials."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise ConfigError(f"not a usable webhook URL (port): {url[:80]!r}") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or len(url) > 512
        or not url.isascii()
        or not url.isprintable()
        or " " in url
    ):
        raise ConfigError(f"not a usable webhook URL: {url[:80]!r}")
    if parts.username is not None or parts.password is not None:
        # Credentials in the URL would show in the log and the dashboard; the HMAC
        # signature is what authenticates a delivery.
        raise ConfigError("a webhook URL must not carry credentials")
    return url


class Alerter:
    """Turns finding changes into log lines and webhook deliveries, and sends them."""

    def __init__(
        self,
        store: SqlMonitoringStore,
        clock: Clock,
        *,
        targets: Sequence[str],
        secret: bytes,
        max_attempts: int = 8,
        egress: EgressPolicy | None = None,
        resolver: Resolver = resolve,
    ) -> None:
        self._store = store
        self._clock = clock
        self._targets = [validate_webhook_url(t) for t in targets]
        self._secret = secret
        self._max_attempts = max_attempts
        self._egress = egress or EgressPolicy()
        self._resolve = resolver

    def notify(self, changes: Sequence[FindingChange]) -> int:
        """Log and queue alerts for changes not alerted yet; returns how many were new."""
        now = self._clock.now()
        queued: list[dict[str, object]] = []
        marked: list[tuple[int, str]] = []
        alerted = 0
        for change in changes:
            finding = change.finding
            if change.event != "resolved" and finding.alerted_state == finding.state:
                continue  # this state was alerted already: deduplicated
            alerted += 1
            log.warning(
                "finding %s: %s [%s] %s",
                change.event,
                finding.check,
                finding.severity,
                finding.summary,
            )
            payload = json.dumps(
                {
                    "event": f"finding.{change.event}",
                    "finding": {
                        "id": finding.id,
                        "check": finding.check,
                        "severity": finding.severity,
                        "status": finding.status,
                        "summary": finding.summary,
                        "ca": finding.ca_name,
                        "serial": finding.serial,
                        "device_id": finding.device_id,
                        "evidence": finding.evidence,
                        "first_seen": finding.first_seen.isoformat(),
                        "last_seen": finding.last_seen.isoformat(),
                    },
                    "sent_at": now.isoformat(),
                },
                sort_keys=True,
                default=str,
            )
            for target in self._targets:
                queued.append(
                    {
                        "finding_id": finding.id,
                        "target": target,
                        "event": change.event,
                        "payload": payload,
                        "created_at": now,
                    }
                )
            if change.event != "resolved":
                marked.append((finding.id, finding.state))
        self._store.mark_alerted(marked)
        self._store.add_deliveries(queued)
        return alerted

    def deliver_due(self) -> int:
        """Attempt every due delivery once; returns how many succeeded."""
        due = self._store.due_deliveries(self._clock.now())
        if not due:
            return 0
        delivered = 0
        with httpx.Client(timeout=_TIMEOUT, trust_env=False, follow_redirects=False) as client:
            for delivery in due:
                delivered += self._attempt(client, delivery)
        return delivered

    def _attempt(self, client: httpx.Client, delivery: Delivery) -> int:
        now = self._clock.now()
        timestamp = str(int(now.timestamp()))
        body = delivery.payload.encode()
        attempts = delivery.attempts + 1
        status: int | None = None
        error: str | None = None
        try:
            url = httpx.URL(delivery.target)
            address = self._vetted_address(url)
            response = client.post(
                url.copy_with(host=address),
                content=body,
                headers={
                    "host": url.netloc.decode("ascii"),
                    "content-type": "application/json",
                    "x-iotpki-timestamp": timestamp,
                    "x-iotpki-signature": sign_payload(self._secret, timestamp, body),
                    "x-iotpki-delivery": str(delivery.id),
                },
                extensions={"sni_hostname": url.host},
            )
            status = response.status_code
            if 200 <= status < 300:
                self._store.update_delivery(
                    delivery.id,
                    status="delivered",
                    attempts=attempts,
                    http_status=status,
                    last_error=None,
                    delivered_at=now,
                )
                return 1
            error = f"HTTP {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:512]
        except PolicyViolation as exc:
            error = f"refused by the egress policy: {exc.message}"[:512]
        delay = next_attempt_delay(attempts)
        final = attempts >= self._max_attempts
        log.warning(
            "webhook delivery %d to %s failed (attempt %d): %s",
            delivery.id,
            delivery.target,
            attempts,
            error,
        )
        self._store.update_delivery(
            delivery.id,
            status="failed" if final else "pending",
            attempts=attempts,
            http_status=status,
            last_error=error,
            next_attempt_at=now + delay,
        )
        return 0

    def _vetted_address(self, url: httpx.URL) -> str:
        """Resolve the target once and vet every address; the first is the one used."""
        host = url.host
        try:
            addresses = list(self._resolve(host, url.port or _PORTS[url.scheme]))
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from exc
        return self._egress.check_all(addresses)[0]


def next_attempt_delay(attempts: int) -> timedelta:
    """The back-off after ``attempts`` failed attempts (30 s doubling, at most 6 h)."""
    delay: timedelta = min(_BASE_DELAY * (2 ** (attempts - 1)), _MAX_DELAY)
    return delay
