"""Unit tests of webhook_sink.sink with a scripted transport (run by
`build.sh test`)."""

import hashlib
import unittest

from webhook_sink.settings import Settings
from webhook_sink.sink import Fatal, Response, Retryable, TransportError, WebhookSink, classify

from test_jsonl import event


class Scripted:
    """Answers from a script (then 200), recording what was sent."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.sent = []

    def send(self, request):
        self.sent.append(request)
        answer = self.answers.pop(0) if self.answers else Response(200, b"ok")
        if isinstance(answer, Exception):
            raise answer
        return answer


def sink(transport, max_bytes=1 << 20):
    settings = Settings.parse(
        [("url", "http://hooks.test:8080/in?token=s3cret"), ("max_bytes", str(max_bytes)), ("header.Authorization", "Bearer tok")]
    )
    return WebhookSink(settings, transport)


BATCH = [event(f"e{i}", message="m" * 300) for i in range(10)]  # ~700 bytes a line


class Classify(unittest.TestCase):
    def test_statuses(self):
        self.assertEqual([classify(s) for s in (200, 202, 299)], ["ok"] * 3)
        self.assertEqual([classify(s) for s in (408, 425, 429, 500, 502, 503, 599)], ["retryable"] * 7)
        self.assertEqual([classify(s) for s in (301, 400, 401, 403, 404, 413, 422)], ["fatal"] * 7)


class Write(unittest.TestCase):
    def test_one_request_with_headers_and_digest(self):
        t = Scripted()
        sink(t).write(BATCH)
        self.assertEqual(len(t.sent), 1)
        r = t.sent[0]
        self.assertEqual((r.scheme, r.authority, r.path_with_query), ("http", "hooks.test:8080", "/in?token=s3cret"))
        h = dict(r.headers)
        self.assertEqual(h["content-type"], "application/x-ndjson")
        self.assertEqual(h["x-kubesink-records"], "10")
        self.assertEqual(h["idempotency-key"], hashlib.sha256(r.body).hexdigest())
        self.assertEqual(h["Authorization"], "Bearer tok")
        self.assertEqual(r.body.count(b"\n"), 10)

    def test_splits_by_max_bytes_and_keeps_order(self):
        t = Scripted()
        sink(t, max_bytes=2048).write(BATCH)
        self.assertGreater(len(t.sent), 3)
        self.assertTrue(all(len(r.body) <= 2048 for r in t.sent))
        uids = [line.split(b'"uid":"')[1].split(b'"')[0].decode() for r in t.sent for line in r.body.splitlines()]
        self.assertEqual(uids, [f"e{i}" for i in range(10)])

    def test_5xx_is_retryable_and_a_retry_skips_accepted_bodies(self):
        t = Scripted(Response(200, b""), Response(503, b"busy now"))
        s = sink(t, max_bytes=2048)
        with self.assertRaises(Retryable) as e:
            s.write(BATCH)
        msg = str(e.exception)
        self.assertIn("HTTP 503 Service Unavailable: busy now", msg)
        self.assertIn("request 2 of", msg)
        self.assertIn("http://hooks.test:8080", msg)
        self.assertNotIn("s3cret", msg, "the URL's query is not quoted")
        first = t.sent[0].body
        t.sent.clear()
        s.write(BATCH)
        self.assertNotIn(first, [r.body for r in t.sent], "the accepted body was not sent again")
        self.assertEqual(sum(r.body.count(b"\n") for r in t.sent), 10 - first.count(b"\n"))

    def test_4xx_is_fatal_and_quotes_the_answer(self):
        t = Scripted(Response(400, b"bad record: " + b"x" * 1000))
        with self.assertRaises(Fatal) as e:
            sink(t).write(BATCH)
        msg = str(e.exception)
        self.assertIn("rejected the batch: HTTP 400 Bad Request: bad record: x", msg)
        self.assertTrue(msg.endswith("..."), "long answers are cut")
        self.assertLess(len(msg), 600)
        self.assertNotIn("Bearer tok", msg)

    def test_transport_errors(self):
        cases = [
            (TransportError("denied", "HttpRequestDenied"), Fatal, "not in the sink's allow-list"),
            (TransportError("too_large", "HttpRequestBodySize(123)"), Fatal, "max_bytes"),
            (TransportError("network", "ConnectionRefused"), Retryable, "no answer: ConnectionRefused"),
        ]
        for error, kind, words in cases:
            with self.subTest(error=error):
                with self.assertRaises(kind) as e:
                    sink(Scripted(error)).write(BATCH)
                self.assertIn(words, str(e.exception))

    def test_empty_batch_sends_nothing(self):
        t = Scripted()
        sink(t).write([])
        self.assertEqual(t.sent, [])


if __name__ == "__main__":
    unittest.main()
