"""The [`Transport`](sink.py) inside the component: one blocking request
through the host's `wasi:http/outgoing-handler`.

Resources are closed in the order `wasi:http` requires (a stream before
the body it belongs to), with `with` blocks rather than left to the garbage
collector.
"""

from __future__ import annotations

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.wasi_http_types import (
    ErrorCode_HttpRequestBodySize,
    ErrorCode_HttpRequestDenied,
    ErrorCode_HttpRequestHeaderSectionSize,
    ErrorCode_HttpRequestHeaderSize,
    ErrorCode_HttpRequestUriInvalid,
    ErrorCode_HttpRequestUriTooLong,
    Fields,
    IncomingBody,
    Method_Post,
    OutgoingBody,
    OutgoingRequest,
    Scheme_Http,
    Scheme_Https,
)

from .sink import Request, Response, TransportError

#: Most bytes written to the body stream per call (the WASI limit for
#: `blocking-write-and-flush`).
WRITE_CHUNK = 4096
#: Most response body bytes read; the rest is left unread.
MAX_RESPONSE_BYTES = 64 << 10

_TOO_LARGE = (
    ErrorCode_HttpRequestBodySize,
    ErrorCode_HttpRequestHeaderSize,
    ErrorCode_HttpRequestHeaderSectionSize,
    ErrorCode_HttpRequestUriTooLong,
)


def _error(code) -> TransportError:
    name = type(code).__name__.removeprefix("ErrorCode_")
    value = getattr(code, "value", None)
    detail = name if value is None else f"{name}({value})"
    if isinstance(code, (ErrorCode_HttpRequestDenied, ErrorCode_HttpRequestUriInvalid)):
        return TransportError("denied", detail)
    if isinstance(code, _TOO_LARGE):
        return TransportError("too_large", detail)
    return TransportError("network", detail)


class WasiHttp:
    """Blocking POSTs through `wasi:http`."""

    def send(self, request: Request) -> Response:
        headers = Fields.from_list([(k, v.encode("utf-8")) for k, v in request.headers])
        outgoing = OutgoingRequest(headers)
        outgoing.set_method(Method_Post())
        outgoing.set_scheme(Scheme_Https() if request.scheme == "https" else Scheme_Http())
        outgoing.set_authority(request.authority)
        outgoing.set_path_with_query(request.path_with_query)
        body = outgoing.body()
        try:
            future = outgoing_handler.handle(outgoing, None)
        except Err as e:
            body.__exit__(None, None, None)  # drop it now, not whenever the GC runs
            raise _error(e.value) from None
        with future:
            # Stream the body after `handle`, so the host takes it as we write.
            write_error = None
            with body.write() as stream:
                data = request.body
                for at in range(0, len(data), WRITE_CHUNK):
                    try:
                        stream.blocking_write_and_flush(data[at : at + WRITE_CHUNK])
                    except Err as e:
                        write_error = f"writing the body: {e.value}"
                        break
            try:
                OutgoingBody.finish(body, None)
            except Err as e:
                write_error = write_error or f"finishing the body: {e.value}"
            with future.subscribe() as ready:
                ready.block()
            answer = future.get()
        if answer is None or isinstance(answer, Err):
            raise TransportError("network", write_error or "no response")
        inner = answer.value
        if isinstance(inner, Err):
            raise _error(inner.value)
        assert isinstance(inner, Ok)
        with inner.value as response:
            status = response.status()
            return Response(status=status, body=_read_body(response))


def _read_body(response) -> bytes:
    data = bytearray()
    incoming = response.consume()
    with incoming.stream() as stream:
        while len(data) < MAX_RESPONSE_BYTES:
            try:
                data += stream.blocking_read(MAX_RESPONSE_BYTES - len(data))
            except Err as e:
                if isinstance(e.value, StreamError_Closed):
                    break
                raise TransportError("network", f"reading the response: {e.value}") from None
    if len(data) < MAX_RESPONSE_BYTES:
        IncomingBody.finish(incoming).__exit__(None, None, None)
    else:
        incoming.__exit__(None, None, None)
    return bytes(data)
