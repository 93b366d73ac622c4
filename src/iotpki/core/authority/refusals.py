"""Auditing what the authority refuses: its own refusals, and anonymous ones folded per source."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from iotpki.core.audit import flush_refusals, fold_refusal, source_key
from iotpki.core.authority._base import AuthorityBase
from iotpki.errors import IotpkiError

_LABELS = ("profile", "ca", "serial", "device_id")


class RefusalAudit(AuthorityBase):
    """Events that accompany no other change, and refusals written once per error."""

    def record_event(self, actor: str, action: str, target: str, data: dict[str, object]) -> None:
        """Append an event that accompanies no other change (e.g. a refusal)."""
        with self._store.transaction() as tx:
            tx.append_audit(self._clock.now(), actor, action, target, data)
        self._emit(action, actor, data)

    def audit_refusal(
        self,
        exc: IotpkiError,
        *,
        source: str,
        actor: str,
        action: str,
        target: str,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        """Audit the refusal of an anonymous request from ``source`` (once per error).

        The first refusal of a source, action and code in a window is written at once; the
        repeats are counted and written as one summary entry when the window closes.
        """
        if exc.audited:
            return
        exc.audited = True
        data: dict[str, object] = {"reason": exc.message[:512], "code": exc.code, **(extra or {})}
        with self._store.transaction() as tx:
            fold_refusal(
                tx,
                self._clock.now(),
                self._config.refusal_window,
                source=source_key(source),
                actor=actor,
                action=action,
                target=target[:256],
                data=data,
            )
        self._emit(action, actor, data)

    def flush_refusals(self) -> int:
        """Write the summary entry of every closed refusal window; how many were written."""
        with self._store.transaction() as tx:
            return flush_refusals(tx, self._clock.now(), self._config.refusal_window)

    @contextmanager
    def _refusals_audited(self, actor: str, action: str, target: str) -> Iterator[None]:
        try:
            yield
        except IotpkiError as exc:
            if exc.audited:
                raise
            exc.audited = True
            labels = {k: v for k, v in exc.data.items() if k in _LABELS}
            self.record_event(
                actor,
                f"{action}.refused",
                target,
                {"reason": exc.message, "code": exc.code, **labels},
            )
            raise
