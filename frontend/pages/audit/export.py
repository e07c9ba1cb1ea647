"""The audit log as CSV: streamed row by row, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import tzinfo
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from backupconsole.models import AuditEvent

HEADER = (
    "time",
    "user",
    "action",
    "object_type",
    "object_id",
    "object",
    "client_address",
    "before",
    "after",
)

# A spreadsheet runs a cell starting with one of these as a formula (CSV injection); a leading
# quote makes it text. Tab and carriage return start formulas in some spreadsheets too.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _json(value: Any) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can feed a generator."""

    def write(self, value: str) -> str:
        return value


def csv_lines(events: QuerySet[AuditEvent], zone: tzinfo) -> Iterator[str]:
    """The header and one line per event, times in ISO 8601 with the offset of ``zone``.

    ``zone`` is passed in because the lines are produced after the view has returned, when the
    request's time zone is no longer active.
    """
    writer = csv.writer(_Echo())
    yield writer.writerow(HEADER)
    for event in events.iterator(chunk_size=1000):
        yield writer.writerow(
            [
                safe_cell(value)
                for value in (
                    timezone.localtime(event.time, zone).isoformat(),
                    event.username,
                    event.action,
                    event.object_type.model if event.object_type else "",
                    event.object_id,
                    event.object_repr,
                    event.client_address,
                    _json(event.before),
                    _json(event.after),
                )
            ]
        )
