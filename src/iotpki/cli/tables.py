"""Tables that fit the terminal, and the same records in full with ``--wide`` or ``--json``.

A column's values are shortened (a serial's first digits, a subject's most specific name, a
time without seconds) only when the table would not fit the terminal otherwise; free text that
still does not fit folds onto further lines. Nothing is cut with an ellipsis.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from iotpki.cli.context import console

__all__ = [
    "JSON_OPTION",
    "SHORT_SERIAL",
    "WIDE_OPTION",
    "Column",
    "print_details",
    "print_json",
    "print_records",
    "short_date",
    "short_serial",
    "short_subject",
    "short_time",
]

Record = Mapping[str, Any]
Style = Callable[[Any], str]

SHORT_SERIAL = 8
"""Hex digits of a shortened serial; any unique prefix is accepted back (see ``lookup``)."""

WIDE_OPTION = typer.Option(False, "--wide", help="Full values, however wide the table")
JSON_OPTION = typer.Option(False, "--json", help="Full records as JSON")

_GAP = 2  # spaces between two columns (rich's padding on either side of the boundary)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


def short_serial(value: Any) -> str:
    """A serial's first hex digits."""
    return _text(value)[:SHORT_SERIAL]


def short_time(value: Any) -> str:
    """A time to the minute."""
    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else _text(value)


def short_date(value: Any) -> str:
    """A time's date."""
    return value.strftime("%Y-%m-%d") if isinstance(value, datetime) else _text(value)


def short_subject(value: Any) -> str:
    """The most specific RDN of an RFC 4514 subject (it comes first), e.g. ``CN=dev-1``."""
    text = _text(value)
    escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",+":
            return text[:i]
    return text


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its header, the record field it shows, and how that value is shortened.

    ``short`` holds ever shorter forms, applied one step at a time while the table is too wide.
    """

    header: str
    field: str
    short: tuple[Callable[[Any], str], ...] = ()
    wrap: bool = False  # free text that may fold onto further lines when still too wide
    style: Style | None = None  # a rich style for the value, e.g. colour by status


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(data: Any) -> None:
    """Machine-readable output: full values, ISO 8601 times, no colour."""
    typer.echo(json.dumps(data, indent=2, default=_json_value))


def _widths(cells: list[list[str]], headers: list[str]) -> list[int]:
    return [
        max([Text(h).cell_len] + [Text(row[i]).cell_len for row in cells])
        for i, h in enumerate(headers)
    ]


def _form(column: Column, level: int) -> Callable[[Any], str]:
    return column.short[level - 1] if level else _text


def _cells(
    records: Sequence[Record], columns: Sequence[Column], levels: list[int]
) -> list[list[str]]:
    forms = [_form(c, level) for c, level in zip(columns, levels, strict=True)]
    return [[form(r.get(c.field)) for c, form in zip(columns, forms, strict=True)] for r in records]


def _needed(cells: list[list[str]], columns: Sequence[Column]) -> int:
    return sum(_widths(cells, [c.header for c in columns])) + _GAP * (len(columns) - 1)


def _fitted(records: Sequence[Record], columns: Sequence[Column], width: int) -> list[list[str]]:
    """The cells, shortened a step at a time (each column's first step, then its second, ...)
    until the table fits ``width`` or nothing is left to shorten."""
    levels = [0] * len(columns)
    cells = _cells(records, columns, levels)
    for step in range(1, max((len(c.short) for c in columns), default=0) + 1):
        for i, column in enumerate(columns):
            if _needed(cells, columns) <= width:
                return cells
            if len(column.short) >= step:
                levels[i] = step
                cells = _cells(records, columns, levels)
    return cells


def print_records(
    records: Sequence[Record],
    columns: Sequence[Column],
    *,
    wide: bool = False,
    as_json: bool = False,
) -> None:
    """Records as a table fitting the terminal, in full with ``wide``, or as JSON."""
    if as_json:
        print_json(list(records))
        return
    if wide:
        cells = _cells(records, columns, [0] * len(columns))
        out = Console(width=max(_needed(cells, columns), console.width), highlight=False)
    else:
        cells = _fitted(records, columns, console.width)
        out = console
    # still too wide once shortened: every column folds, so that nothing is silently cropped
    crowded = not wide and _needed(cells, columns) > out.width
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for column in columns:
        table.add_column(column.header, no_wrap=not (column.wrap or crowded), overflow="fold")
    for record, row in zip(records, cells, strict=True):
        table.add_row(
            *(
                Text(value, style=c.style(record.get(c.field)) if c.style else "")
                for c, value in zip(columns, row, strict=True)
            )
        )
    out.print(table)


def print_details(rows: Sequence[tuple[str, str]]) -> None:
    """Name and value pairs, one a line; long values fold, never cut."""
    table = Table(box=None, pad_edge=False, show_header=False, show_edge=False)
    table.add_column(no_wrap=True, style="bold")
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, Text(value))
    console.print(table)
