"""Turns kubesink changes into JSON lines, and lines into request bodies.

One line per change, in batch order, UTF-8, `\\n`-terminated:

```json
{"kind":"event","change":"applied","removed_at":null,"record":{"meta":{...},...}}
```

- `kind`: `job`, `pod` or `event`;
- `change`: `applied`, `removed` or `tombstone`; `removed_at` is the
  removal time for `removed` and `tombstone`, else `null`;
- `record`: every field of the WIT record (`wit/sink.wit`), named as there
  with `-` turned into `_`, in WIT order. Timestamps are RFC 3339 UTC
  strings (`2026-03-02T08:00:00Z`, 9 fractional digits when the nanoseconds
  are not 0); `option<...>` is the value or `null`; `labels` is a JSON object;
  `resources` stays the JSON text the host gives. A tombstone (an object
  deleted while the host was not watching, known by its uid only) has
  `{"meta":{"uid":...}}`; this sink holds nothing, so the host sends it
  none.

The conversion walks the generated dataclasses, so a field added to the WIT
appears without a change here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, List

from wit_world.imports.kubesink_sink_types import (
    Change,
    Change_Applied,
    Change_Removed,
    Change_Tombstone,
    Record_Event,
    Record_Job,
    Record_Pod,
    RecordKind,
    Timestamp,
)

_KINDS = {Record_Job: "job", Record_Pod: "pod", Record_Event: "event"}
_RECORD_KINDS = {RecordKind.JOB: "job", RecordKind.POD: "pod", RecordKind.EVENT: "event"}


def _civil_from_days(days: int) -> tuple:
    """(year, month, day) of a day count since 1970-01-01 (proleptic
    Gregorian; H. Hinnant's algorithm), valid for any integer."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y, m, d)


def timestamp_text(ts: Timestamp) -> str:
    """RFC 3339 in UTC: `YYYY-MM-DDTHH:MM:SS[.nnnnnnnnn]Z`."""
    days, secs = divmod(ts.seconds, 86400)
    y, m, d = _civil_from_days(days)
    hh, rem = divmod(secs, 3600)
    mm, ss = divmod(rem, 60)
    frac = f".{ts.nanos:09d}" if ts.nanos else ""
    return f"{y:04d}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}{frac}Z"


def _json_value(value: Any) -> Any:
    if isinstance(value, Timestamp):
        return timestamp_text(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value):
            # list<tuple<string, T>>: a map (labels).
            return {k: _json_value(v) for k, v in value}
        return [_json_value(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return list(value)
    return value


def entry_object(entry: Change) -> dict:
    """The JSON object of one change (see the module doc)."""
    if isinstance(entry, Change_Tombstone):
        t = entry.value
        return {
            "kind": _RECORD_KINDS[t.kind],
            "change": "tombstone",
            "removed_at": timestamp_text(t.at),
            "record": {"meta": {"uid": t.uid}},
        }
    if isinstance(entry, Change_Removed):
        change, removed_at = "removed", timestamp_text(entry.value.at)
        record = entry.value.record
    elif isinstance(entry, Change_Applied):
        change, removed_at, record = "applied", None, entry.value
    else:
        raise TypeError(f"unknown change variant {type(entry).__name__}")
    kind = _KINDS.get(type(record))
    if kind is None:
        raise TypeError(f"unknown record variant {type(record).__name__}")
    return {
        "kind": kind,
        "change": change,
        "removed_at": removed_at,
        "record": _json_value(record.value),
    }


def encode_entry(entry: Change) -> bytes:
    """One JSON line (UTF-8, compact, non-ASCII kept as is, ending in `\\n`)."""
    text = json.dumps(entry_object(entry), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


def bodies(lines: Iterable[bytes], max_bytes: int) -> List[List[bytes]]:
    """Groups lines, in order, into request bodies of at most `max_bytes`
    bytes each. A line longer than `max_bytes` gets a body of its own (the
    host's request cap still applies to it)."""
    out: List[List[bytes]] = []
    current: List[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) > max_bytes:
            out.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        out.append(current)
    return out
