"""kubesink webhook sink, written in Python and built with componentize-py
into a WebAssembly component of `kubesink:sink/http-sink-world`
(`wit/http-sink.wit`).

Each batch is POSTed as JSON lines to the configured URL through the host's
`wasi:http` (so the URL's host must be in the sink's `allow_hosts`). It keeps
no state about records, so `held` returns one empty page, and `init` says it
is a log: every change appended, every field read.

Settings: `webhook_sink/settings.py`. Line format: `webhook_sink/jsonl.py`.
Status handling and redelivery: `webhook_sink/sink.py`. Build:
`bash sinks/webhook-py/build.sh`.

componentize-py looks for a class named like the exported interface
(`Sink`) in this module.
"""

from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.kubesink_sink_types import (
    Change,
    Error_Fatal,
    Error_Retryable,
    HeldPage,
    OptionalField,
    RecordKind,
    Shape,
    Wants,
)

from webhook_sink.settings import Settings, SettingsError
from webhook_sink.sink import Fatal, Retryable, WebhookSink
from webhook_sink.wasi_http import WasiHttp

_SINK: Optional[WebhookSink] = None


class Sink(exports.Sink):
    """The `kubesink:sink/sink` export."""

    def init(self, settings: List[Tuple[str, str]]) -> Wants:
        global _SINK
        try:
            _SINK = WebhookSink(Settings.parse(settings), WasiHttp())
        except SettingsError as e:
            raise Err(Error_Fatal(str(e))) from None
        # Every kind, every update, every field (all go into the lines).
        return Wants(kinds=[], shape=Shape.LOG, fields=list(OptionalField))

    def write(self, batch: List[Change]) -> None:
        if _SINK is None:
            raise Err(Error_Fatal("webhook sink: write before a successful init"))
        try:
            _SINK.write(batch)
        except Retryable as e:
            raise Err(Error_Retryable(str(e))) from None
        except Fatal as e:
            raise Err(Error_Fatal(str(e))) from None
        except Err:
            raise
        except Exception as e:  # a bug here: report it rather than trap
            raise Err(Error_Fatal(f"webhook sink: internal error: {type(e).__name__}: {e}")) from None

    def held(self, kind: RecordKind, cursor: Optional[str], limit: int) -> HeldPage:
        # A webhook keeps nothing the host could reconcile.
        return HeldPage(uids=[], next=None)
