"""Unit tests of webhook_sink.jsonl (run by `build.sh test`, with the
bindings componentize-py generates from the WIT on the path)."""

import datetime
import json
import unittest

from wit_world.imports.kubesink_sink_types import (
    Change_Applied,
    Change_Removed,
    Change_Tombstone,
    Event,
    Job,
    Meta,
    ObjectRef,
    Record_Event,
    Record_Job,
    RecordKind,
    Removal,
    Timestamp,
    Tombstone,
)

from webhook_sink.jsonl import bodies, encode_entry, entry_object, timestamp_text

T0 = 1_772_438_400  # 2026-03-02T08:00:00Z


def meta(uid="u1", labels=None):
    return Meta(
        uid=uid,
        name="mnist",
        namespace="ml",
        resource_version="48325",
        resource_version_num=48325,
        labels=labels if labels is not None else [("app", "mnist"), ("team", "视觉组")],
        created=Timestamp(seconds=T0, nanos=0),
    )


def job(uid="u1", removed_at=None):
    record = Record_Job(
            Job(
                meta=meta(uid),
                api_version="training.kubedl.io/v1alpha1",
                kind="TFJob",
                status="Running",
                resources='{"Worker":{"replicas":2}}',
                tenant="ai-lab",
                owner="张伟",
                region="cn-hangzhou",
                modified=Timestamp(seconds=T0 + 5, nanos=0),
                running_at=Timestamp(seconds=T0 + 5, nanos=120_000_000),
                finished_at=None,
                remark="",
            )
        )
    if removed_at is None:
        return Change_Applied(record)
    return Change_Removed(Removal(at=removed_at, record=record))


def event(uid="e1", message="Created pod"):
    return Change_Applied(
        Record_Event(
            Event(
                meta=meta(uid, labels=[]),
                involved=ObjectRef(api_version="v1", kind="Pod", namespace="ml", name="p", uid="pu"),
                event_type="Warning",
                reason="BackOff",
                message=message,
                source="kubelet/node-a",
                count=3,
                first_seen=Timestamp(seconds=T0, nanos=0),
                last_seen=Timestamp(seconds=T0 + 60, nanos=0),
                region="",
            )
        ),
    )


class Timestamps(unittest.TestCase):
    def test_matches_datetime_over_a_wide_range(self):
        for secs in [0, 1, 86_399, 86_400, T0, 951_782_400, 4_102_444_800, 253_402_300_799, -1, -86_401, -2_208_988_800]:
            with self.subTest(secs=secs):
                want = (datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=secs)).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                )
                self.assertEqual(timestamp_text(Timestamp(seconds=secs, nanos=0)), want)

    def test_nanoseconds_have_nine_digits_only_when_set(self):
        self.assertEqual(timestamp_text(Timestamp(seconds=T0, nanos=5)), "2026-03-02T08:00:00.000000005Z")
        self.assertEqual(timestamp_text(Timestamp(seconds=T0, nanos=0)), "2026-03-02T08:00:00Z")


class Lines(unittest.TestCase):
    def test_job_line_has_every_field_in_wit_order(self):
        obj = entry_object(job())
        self.assertEqual(list(obj), ["kind", "change", "removed_at", "record"])
        self.assertEqual((obj["kind"], obj["change"], obj["removed_at"]), ("job", "applied", None))
        rec = obj["record"]
        self.assertEqual(
            list(rec),
            ["meta", "api_version", "kind", "status", "resources", "tenant", "owner", "region", "modified", "running_at", "finished_at", "remark"],
        )
        self.assertEqual(rec["meta"]["labels"], {"app": "mnist", "team": "视觉组"})
        self.assertEqual(rec["meta"]["created"], "2026-03-02T08:00:00Z")
        self.assertEqual(rec["meta"]["resource_version_num"], 48325)
        self.assertEqual(rec["running_at"], "2026-03-02T08:00:05.120000000Z")
        self.assertIsNone(rec["finished_at"])
        self.assertEqual(rec["resources"], '{"Worker":{"replicas":2}}')

    def test_removed_entry_carries_its_time(self):
        obj = entry_object(job(removed_at=Timestamp(seconds=T0 + 3600, nanos=0)))
        self.assertEqual((obj["change"], obj["removed_at"]), ("removed", "2026-03-02T09:00:00Z"))
        self.assertEqual(obj["record"]["meta"]["uid"], "u1")

    def test_tombstone_has_its_uid_and_time_only(self):
        obj = entry_object(Change_Tombstone(Tombstone(kind=RecordKind.POD, uid="gone", at=Timestamp(seconds=T0, nanos=0))))
        self.assertEqual(
            obj,
            {"kind": "pod", "change": "tombstone", "removed_at": "2026-03-02T08:00:00Z", "record": {"meta": {"uid": "gone"}}},
        )

    def test_event_nested_records_and_empty_labels(self):
        rec = entry_object(event())["record"]
        self.assertEqual(rec["involved"], {"api_version": "v1", "kind": "Pod", "namespace": "ml", "name": "p", "uid": "pu"})
        self.assertEqual(rec["meta"]["labels"], {})
        self.assertEqual(rec["count"], 3)

    def test_encoded_line_is_compact_utf8_with_one_newline(self):
        line = encode_entry(event(message='say "hi"\nnext line ü'))
        self.assertTrue(line.endswith(b"\n"))
        self.assertEqual(line.count(b"\n"), 1, "newlines inside values are escaped")
        self.assertIn("ü".encode("utf-8"), line)
        self.assertNotIn(b": ", line)
        self.assertEqual(json.loads(line)["record"]["message"], 'say "hi"\nnext line ü')


class Bodies(unittest.TestCase):
    def test_groups_in_order_under_the_cap(self):
        lines = [b"a" * 40 + b"\n", b"b" * 40 + b"\n", b"c" * 40 + b"\n"]
        self.assertEqual(bodies(lines, 100), [lines[:2], lines[2:]])
        self.assertEqual(bodies(lines, 1000), [lines])
        self.assertEqual(bodies([], 100), [])

    def test_an_oversized_line_goes_alone(self):
        big = b"x" * 300 + b"\n"
        small = b"s\n"
        self.assertEqual(bodies([small, big, small], 100), [[small], [big], [small]])


if __name__ == "__main__":
    unittest.main()
