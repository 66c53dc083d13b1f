"""Unit tests of the export glue in app.py (run by `build.sh test`): errors
become the WIT `error` cases, `init` says what the sink wants, and `held` is
empty."""

import unittest

from componentize_py_types import Err
from wit_world.imports.kubesink_sink_types import (
    Error_Fatal,
    Error_Retryable,
    HeldPage,
    OptionalField,
    RecordKind,
    Shape,
)

import app
from webhook_sink.sink import Response, TransportError

from test_jsonl import event


class Scripted:
    def __init__(self, answer):
        self.answer = answer

    def send(self, request):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Exports(unittest.TestCase):
    def setUp(self):
        self.sink = app.Sink()
        self.sink.init([("url", "http://127.0.0.1:9/in")])

    def use(self, answer):
        app._SINK.transport = Scripted(answer)

    def test_bad_settings_are_fatal(self):
        with self.assertRaises(Err) as e:
            self.sink.init([("url", "http://h/"), ("bogus", "1")])
        self.assertIsInstance(e.exception.value, Error_Fatal)
        self.assertIn("unknown setting `bogus`", e.exception.value.value)

    def test_status_classes_map_to_wit_errors(self):
        self.use(Response(503, b""))
        with self.assertRaises(Err) as e:
            self.sink.write([event()])
        self.assertIsInstance(e.exception.value, Error_Retryable)
        self.use(Response(400, b"no"))
        with self.assertRaises(Err) as e:
            self.sink.write([event()])
        self.assertIsInstance(e.exception.value, Error_Fatal)
        self.use(Response(204, b""))
        self.assertIsNone(self.sink.write([event()]))

    def test_unexpected_exception_is_fatal_not_a_trap(self):
        self.use(ZeroDivisionError("boom"))
        with self.assertRaises(Err) as e:
            self.sink.write([event()])
        self.assertIsInstance(e.exception.value, Error_Fatal)
        self.assertIn("internal error: ZeroDivisionError: boom", e.exception.value.value)

    def test_transport_denial_is_fatal(self):
        self.use(TransportError("denied", "HttpRequestDenied"))
        with self.assertRaises(Err) as e:
            self.sink.write([event()])
        self.assertIsInstance(e.exception.value, Error_Fatal)

    def test_init_wants_every_change_of_every_kind_and_field(self):
        wants = app.Sink().init([("url", "http://127.0.0.1:9/in")])
        self.assertEqual(wants.shape, Shape.LOG)
        self.assertEqual(wants.kinds, [])
        self.assertEqual(set(wants.fields), set(OptionalField))

    def test_held_is_one_empty_page_for_every_kind(self):
        for kind in RecordKind:
            self.assertEqual(self.sink.held(kind, None, 100), HeldPage(uids=[], next=None))


if __name__ == "__main__":
    unittest.main()
