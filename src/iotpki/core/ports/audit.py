"""The store's audit side: the hash-chained log and the counters of repeated refusals."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from iotpki.core.models import (
    AuditEvent,
    RefusalCounter,
)

__all__ = ["AbuseTx", "AuditTx", "RefusalTx"]


class AuditTx(Protocol):
    """The hash-chained audit log, appended to inside the transaction it records."""

    def append_audit(
        self, time: datetime, actor: str, action: str, target: str, data: dict[str, object]
    ) -> AuditEvent:
        """Append one event to the hash chain, serialised against other writers."""
        ...


class AbuseTx(Protocol):
    """Counters folding repeated anonymous refusals into one audit entry per window."""

    def claim_refusal_counter(self, counter: RefusalCounter) -> tuple[RefusalCounter, bool]:
        """The locked counter of ``counter``'s key, inserted as given if absent (then True)."""
        ...

    def put_refusal_counter(self, counter: RefusalCounter) -> None:
        """Store a counter claimed in this transaction."""
        ...

    def closed_refusal_counters(self, before: datetime, limit: int) -> list[RefusalCounter]:
        """Locked counters whose window started before ``before``, oldest first."""
        ...

    def delete_refusal_counter(self, counter: RefusalCounter) -> None:
        """Forget a counter (its window was written to the chain)."""
        ...


class RefusalTx(AbuseTx, AuditTx, Protocol):
    """What folding refusals needs: the counters and the log they are written to."""
