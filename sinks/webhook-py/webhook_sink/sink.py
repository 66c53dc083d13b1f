"""Delivery: a batch becomes one or more POST requests of JSON lines, and
each answer becomes success, a retryable error or a fatal one.

Requests carry `Content-Type: application/x-ndjson`, `X-Kubesink-Records`
(the number of lines) and `Idempotency-Key` (the SHA-256 of the body, hex),
plus the configured headers.

Answers:

| answer | outcome |
| --- | --- |
| 2xx | delivered |
| 408, 425, 429, 5xx | `retryable`: the host redelivers the batch with backoff |
| any other status (3xx, 4xx) | `fatal`: the receiver rejected the data; the host splits the batch to isolate the entries at fault and records them as failed |
| the host denied the request (not in the allow-list) or it is larger than the host's cap | `fatal` |
| connection refused, DNS, timeouts, a broken connection | `retryable` |

Redelivery: a batch retried on the same instance skips the bodies the
receiver already accepted (remembered by their SHA-256, the last 4096), so
a batch split into several requests does not repeat the ones that went
through. After a fatal error the host builds a new instance, which
remembers nothing: receivers that must not see a line twice deduplicate
on `Idempotency-Key` and on the record's `meta.uid` +
`meta.resource_version`.

The HTTP transport is passed in ([`Transport`]), so this module runs and is
tested on plain CPython; `wasi_http.py` is the one inside the component.
"""

from __future__ import annotations

import hashlib
import http
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Protocol, Sequence, Tuple

from .jsonl import bodies, encode_entry
from .settings import Settings

#: How many accepted body digests an instance remembers.
REMEMBERED_BODIES = 4096
#: Most bytes of a response body quoted in an error message.
QUOTED_BODY_BYTES = 256

_RETRYABLE_STATUS = frozenset({408, 425, 429})


class Retryable(Exception):
    """Transient failure: the WIT `retryable` case."""


class Fatal(Exception):
    """Permanent failure: the WIT `fatal` case."""


@dataclass(frozen=True)
class Request:
    """One POST, in `wasi:http` terms."""

    scheme: str
    authority: str
    path_with_query: str
    headers: Tuple[Tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class Response:
    """What came back: the status and the start of the body."""

    status: int
    body: bytes


class TransportError(Exception):
    """The request got no HTTP answer. `kind` is `denied` (the host refused
    it before any I/O), `too_large` (past a host cap) or `network`."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Transport(Protocol):
    """Sends one request and returns the answer, or raises [`TransportError`]."""

    def send(self, request: Request) -> Response: ...


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _quote(body: bytes) -> str:
    text = body[:QUOTED_BODY_BYTES].decode("utf-8", errors="replace").strip()
    if len(body) > QUOTED_BODY_BYTES:
        text += "..."
    return text


def classify(status: int) -> str:
    """`ok`, `retryable` or `fatal` for an HTTP status."""
    if 200 <= status < 300:
        return "ok"
    if status in _RETRYABLE_STATUS or 500 <= status < 600:
        return "retryable"
    return "fatal"


class WebhookSink:
    """The sink's state: settings, transport and the accepted-body memory."""

    def __init__(self, settings: Settings, transport: Transport):
        self.settings = settings
        self.transport = transport
        self._accepted: "OrderedDict[str, None]" = OrderedDict()

    def _remember(self, digest: str) -> None:
        self._accepted[digest] = None
        self._accepted.move_to_end(digest)
        while len(self._accepted) > REMEMBERED_BODIES:
            self._accepted.popitem(last=False)

    def requests(self, entries: Sequence) -> List[Tuple[str, Request]]:
        """The requests a batch becomes, each with its body's digest."""
        t = self.settings.target
        out = []
        for lines in bodies((encode_entry(e) for e in entries), self.settings.max_bytes):
            body = b"".join(lines)
            digest = hashlib.sha256(body).hexdigest()
            headers = (
                ("content-type", "application/x-ndjson"),
                ("x-kubesink-records", str(len(lines))),
                ("idempotency-key", digest),
            ) + self.settings.headers
            out.append(
                (
                    digest,
                    Request(
                        scheme=t.scheme,
                        authority=t.authority,
                        path_with_query=t.path_with_query,
                        headers=headers,
                        body=body,
                    ),
                )
            )
        return out

    def write(self, entries: Sequence) -> None:
        """Delivers a batch; raises [`Retryable`] or [`Fatal`]."""
        planned = self.requests(entries)
        origin = self.settings.target.origin()
        for i, (digest, request) in enumerate(planned, start=1):
            if digest in self._accepted:
                continue
            where = f"webhook sink: POST {origin} (request {i} of {len(planned)}, {len(request.body)} bytes)"
            try:
                response = self.transport.send(request)
            except TransportError as e:
                if e.kind == "denied":
                    raise Fatal(
                        f"{where}: the host denied the request: {origin} is not in the sink's allow-list (allow_hosts) [{e.detail}]"
                    ) from None
                if e.kind == "too_large":
                    raise Fatal(
                        f"{where}: past a host limit [{e.detail}]; lower the sink's `max_bytes` or raise the host's cap"
                    ) from None
                raise Retryable(f"{where}: no answer: {e.detail}") from None
            verdict = classify(response.status)
            status = f"HTTP {response.status} {_reason(response.status)}".rstrip()
            if verdict == "ok":
                self._remember(digest)
            elif verdict == "retryable":
                raise Retryable(f"{where}: the receiver failed: {status}: {_quote(response.body)}")
            else:
                raise Fatal(f"{where}: the receiver rejected the batch: {status}: {_quote(response.body)}")
