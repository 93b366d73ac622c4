"""Certificates named on the command line by a unique prefix of their serial, as git names commits.

The prefix is a range of the serial index (``serial >= p AND serial < p || 'g'``, serials being
lower-case hex), read through the inventory store: a lookup costs the same for ten certificates
or ten million.
"""

from __future__ import annotations

from iotpki.core.encoding import parse_serial
from iotpki.core.models import CertificateRecord
from iotpki.core.monitoring import InventoryFilter, InventoryRow
from iotpki.errors import Conflict, NotFound
from iotpki.services.installation import Installation
from iotpki.store.inventory import SqlInventoryStore

__all__ = ["find_certificate"]

_LISTED = 10  # matches named in an ambiguity error


def _describe(row: InventoryRow) -> str:
    return f"{row.serial} ({row.ca_name}, {row.device_id or row.subject})"


def find_certificate(inst: Installation, text: str, ca: str | None) -> CertificateRecord:
    """The one certificate whose serial is ``text`` or starts with it (within ``ca``, if given)."""
    prefix = parse_serial(text)
    rows = SqlInventoryStore(inst.store).search(
        InventoryFilter(serial=prefix, ca=ca),
        inst.authority.clock.now(),
        before_id=None,
        limit=_LISTED + 1,
    )
    exact = [r for r in rows if r.serial == prefix]
    matches = exact or rows
    if not matches:
        where = f" in CA {ca}" if ca else ""
        raise NotFound(f"no certificate{where} with a serial starting {prefix}", serial=prefix)
    if len(matches) > 1:
        more = ", ..." if len(rows) > _LISTED else ""
        listed = ", ".join(_describe(r) for r in matches[:_LISTED])
        hint = "name the CA with --ca" if exact else "give more digits"
        raise Conflict(
            f"serial {prefix} is ambiguous ({hint}): {listed}{more}",
            serial=prefix,
            matches=[r.serial for r in matches[:_LISTED]],
        )
    return inst.authority.get(matches[0].serial, ca=matches[0].ca_name)
