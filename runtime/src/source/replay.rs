//! The replay source: Kubernetes objects from a file or stdin, as
//! `kubectl get -o json` prints them (an object, or a `List` of them) or as
//! `kubectl get --watch --output-watch-events -o json` prints them
//! (`{"type": "ADDED|MODIFIED|DELETED", "object": {...}}`, one document
//! after another), turned into entries exactly as the live source does.
//!
//! A malformed document is reported with its line and skipped; the good
//! documents around it are delivered.

use std::borrow::Cow;
use std::io::BufRead;

use kubesink_normalize::record::Entry;
use serde_json::Value;
use serde_json::value::RawValue;

use super::split::{Piece, Splitter};
use super::{Normalizer, now};

/// Counts and problems of one replay.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Documents read (watch events, lists, objects).
    pub documents: u64,
    /// Objects turned into entries.
    pub entries: u64,
    /// Objects of kinds kubesink does not watch, and BOOKMARK events.
    pub ignored: u64,
    /// Problems, each naming the input and line: skipped documents and
    /// objects.
    pub problems: Vec<String>,
}

/// Reads `reader` (named `origin` in messages), calling `emit` for each
/// entry in input order. Stops early if `emit` returns false.
pub fn replay(
    reader: impl BufRead,
    origin: &str,
    normalizer: &Normalizer,
    mut emit: impl FnMut(Entry) -> bool,
) -> ReplayReport {
    replay_batches(reader, origin, normalizer, 1, |batch| {
        batch.into_iter().all(&mut emit)
    })
}

/// [`replay`], handing entries over in batches of up to `max` (at least
/// one), in input order: a batch goes as soon as it is full, and before
/// every read of `reader` (so that entries read from a pipe never wait for
/// input that has not come yet), and the last one at the end. Stops early
/// if `emit` returns false.
pub fn replay_batches(
    reader: impl BufRead,
    origin: &str,
    normalizer: &Normalizer,
    max: usize,
    emit: impl FnMut(Vec<Entry>) -> bool,
) -> ReplayReport {
    let mut batches = Batches::new(max, emit);
    let report = read(reader, origin, normalizer, &mut batches);
    if !batches.stopped {
        batches.flush();
    }
    report
}

/// Entries gathered into batches for an `emit` that takes them.
struct Batches<F> {
    max: usize,
    batch: Vec<Entry>,
    emit: F,
    /// `emit` asked to stop.
    stopped: bool,
}

impl<F: FnMut(Vec<Entry>) -> bool> Batches<F> {
    fn new(max: usize, emit: F) -> Self {
        let max = max.max(1);
        Self {
            max,
            batch: Vec::with_capacity(max),
            emit,
            stopped: false,
        }
    }

    /// Adds an entry, handing the batch over once full; `false` when
    /// `emit` asks to stop.
    fn push(&mut self, entry: Entry) -> bool {
        self.batch.push(entry);
        if self.batch.len() >= self.max {
            return self.flush();
        }
        true
    }

    /// Hands over what is gathered, if anything; `false` when `emit` asks
    /// to stop.
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.max));
        self.stopped = !(self.emit)(batch);
        !self.stopped
    }
}

fn read<F: FnMut(Vec<Entry>) -> bool>(
    reader: impl BufRead,
    origin: &str,
    normalizer: &Normalizer,
    batches: &mut Batches<F>,
) -> ReplayReport {
    let mut report = ReplayReport::default();
    let mut pieces = Splitter::new(reader);
    loop {
        // The splitter reads when it has no piece left: what is gathered
        // goes first.
        if !pieces.has_ready() && !batches.flush() {
            return report;
        }
        let Some(piece) = pieces.next() else {
            break;
        };
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                report.problems.push(format!("{origin}: read error: {e}"));
                break;
            }
        };
        let (line, bytes) = match piece {
            Piece::Document { line, bytes } => (line, bytes),
            Piece::Garbage { line, text } => {
                let mut shown: String = text.chars().take(40).collect();
                if shown.len() < text.len() {
                    shown.push('…');
                }
                report.problems.push(format!(
                    "{origin}:{line}: skipped text that is not a JSON document: {shown:?}"
                ));
                continue;
            }
            Piece::Unterminated { line } => {
                report.problems.push(format!(
                    "{origin}:{line}: skipped a document that is never closed (missing brace or quote)"
                ));
                continue;
            }
        };
        report.documents += 1;
        if let Some(entry) = watch_event_entry(&bytes, normalizer) {
            pieces.recycle(bytes);
            if !tally(&mut report, entry, (origin, line), &mut |e| batches.push(e)) {
                return report;
            }
            continue;
        }
        let doc: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                report.problems.push(format!(
                    "{origin}:{}: skipped malformed JSON document: {e}",
                    line + e.line().saturating_sub(1)
                ));
                continue;
            }
        };
        let mut objects = Vec::new();
        if let Err(message) = unpack(doc, &mut objects) {
            report
                .problems
                .push(format!("{origin}:{line}: skipped document: {message}"));
            continue;
        }
        for (change, object) in objects {
            match change {
                None => report.ignored += 1,
                Some(change) => {
                    let entry = normalizer.entry(&object, change);
                    if !tally(&mut report, entry, (origin, line), &mut |e| batches.push(e)) {
                        return report;
                    }
                }
            }
        }
    }
    report
}

/// Counts one object's outcome into `report` (a problem names `origin`
/// and `line`), emitting its entry; `false` when `emit` asks to stop.
fn tally(
    report: &mut ReplayReport,
    entry: Result<Option<Entry>, String>,
    (origin, line): (&str, impl std::fmt::Display),
    emit: &mut impl FnMut(Entry) -> bool,
) -> bool {
    match entry {
        Ok(Some(entry)) => {
            report.entries += 1;
            return emit(entry);
        }
        Ok(None) => report.ignored += 1,
        Err(e) => report
            .problems
            .push(format!("{origin}:{line}: skipped object: {e}")),
    }
    true
}

/// What a document holds: objects with what happened to them (`None`:
/// nothing to deliver, e.g. a BOOKMARK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Applied,
    Removed,
}

fn unpack(doc: Value, out: &mut Vec<(Option<Kind>, Value)>) -> Result<(), String> {
    match doc {
        Value::Array(items) => {
            for item in items {
                unpack(item, out)?;
            }
            Ok(())
        }
        Value::Object(mut map) => {
            // A watch event.
            if let (Some(Value::String(t)), true) = (map.get("type"), map.contains_key("object")) {
                let kind = match t.as_str() {
                    "ADDED" | "MODIFIED" => Some(Kind::Applied),
                    "DELETED" => Some(Kind::Removed),
                    "BOOKMARK" => None,
                    "ERROR" => {
                        return Err(format!(
                            "watch ERROR event: {}",
                            map.get("object").map(Value::to_string).unwrap_or_default()
                        ));
                    }
                    other => return Err(format!("unknown watch event type `{other}`")),
                };
                let object = map.remove("object").unwrap_or(Value::Null);
                out.push((kind, object));
                return Ok(());
            }
            // A list: `List` or `<Kind>List` with `items`.
            let list_kind = map
                .get("kind")
                .and_then(Value::as_str)
                .filter(|k| k.ends_with("List"))
                .map(str::to_owned);
            if let (Some(list_kind), Some(Value::Array(_))) = (&list_kind, map.get("items")) {
                let api_version = map.get("apiVersion").cloned();
                let item_kind = list_kind
                    .strip_suffix("List")
                    .unwrap_or_default()
                    .to_owned();
                let Some(Value::Array(items)) = map.remove("items") else {
                    unreachable!("checked above")
                };
                for mut item in items {
                    // Typed lists may omit kind/apiVersion on their items.
                    if let Value::Object(o) = &mut item {
                        if !o.contains_key("kind") && !item_kind.is_empty() {
                            o.insert("kind".into(), Value::String(item_kind.clone()));
                        }
                        if !o.contains_key("apiVersion")
                            && let Some(v) = &api_version
                        {
                            o.insert("apiVersion".into(), v.clone());
                        }
                    }
                    out.push((Some(Kind::Applied), item));
                }
                return Ok(());
            }
            out.push((Some(Kind::Applied), Value::Object(map)));
            Ok(())
        }
        other => Err(format!(
            "expected an object, a List or a watch event, found {}",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                _ => "something else",
            }
        )),
    }
}

/// The entry of a document that is a watch event of an object naming its
/// `apiVersion` and `kind`, decoded once straight into the typed form;
/// `None` for any other document (the replay then reads it as a
/// `serde_json::Value`, and reports what is wrong with it).
pub fn watch_event_entry(
    bytes: &[u8],
    normalizer: &Normalizer,
) -> Option<Result<Option<Entry>, String>> {
    let (event, head, kind) = watch_event(bytes)?;
    Some(normalizer.entry_of_raw(event.object.get(), &head, kind))
}

/// A watch event as the replay's fast path reads it: the object's text is
/// borrowed from the document, not copied.
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    type_: Cow<'a, str>,
    #[serde(borrow)]
    object: &'a RawValue,
}

/// What the replay reads of an object besides its text: only what picks
/// its typed form and a deletion's time, borrowed where the text has no
/// escapes (the live source's [`super::object::RawObject`] also keeps
/// its metadata; the replay has no use for it).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head<'a> {
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: Option<HeadMeta<'a>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeadMeta<'a> {
    #[serde(borrow, default)]
    deletion_timestamp: Option<Cow<'a, str>>,
}

/// The fast path for the usual document, a watch event of an object that
/// names its `apiVersion` and `kind`: the object is decoded once, straight
/// into its typed form. Anything else (lists, bare objects, BOOKMARK and
/// ERROR events, malformed text) is `None` and takes the general path,
/// which reports it as before.
fn watch_event(bytes: &[u8]) -> Option<(Event<'_>, Head<'_>, Kind)> {
    let event: Event<'_> = serde_json::from_slice(bytes).ok()?;
    let kind = match &*event.type_ {
        "ADDED" | "MODIFIED" => Kind::Applied,
        "DELETED" => Kind::Removed,
        _ => return None,
    };
    let head: Head<'_> = serde_json::from_str(event.object.get()).ok()?;
    (head.api_version.is_some() && head.kind.is_some()).then_some((event, head, kind))
}

impl Normalizer {
    fn entry_of_raw(
        &self,
        json: &str,
        head: &Head<'_>,
        kind: Kind,
    ) -> Result<Option<Entry>, String> {
        let removed_at = match kind {
            Kind::Applied => None,
            Kind::Removed => Some(
                head.metadata
                    .as_ref()
                    .and_then(|m| m.deletion_timestamp.as_deref())
                    .and_then(kubesink_normalize::time::parse)
                    .unwrap_or_else(now),
            ),
        };
        // `watch_event` took only objects that name both.
        let api_version = head.api_version.as_deref().unwrap_or_default();
        let object_kind = head.kind.as_deref().unwrap_or_default();
        self.normalize_json(json, api_version, object_kind, removed_at)
    }

    fn entry(&self, object: &Value, kind: Kind) -> Result<Option<Entry>, String> {
        let removed_at = match kind {
            Kind::Applied => None,
            Kind::Removed => Some(kubesink_normalize::removed_at(object).unwrap_or_else(now)),
        };
        self.normalize(object, removed_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesink_normalize::record::Change;

    fn pod(name: &str, rv: &str) -> String {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"ns","uid":"uid-{name}","resourceVersion":"{rv}","creationTimestamp":"2024-01-01T00:00:00Z","ownerReferences":[{{"apiVersion":"batch/v1","kind":"Job","name":"j","uid":"job-uid","controller":true}}]}},"spec":{{"containers":[{{"name":"main","image":"busybox"}}]}},"status":{{"phase":"Pending"}}}}"#
        )
    }

    fn run(input: &str) -> (Vec<Entry>, ReplayReport) {
        let mut entries = Vec::new();
        let report = replay(input.as_bytes(), "in.json", &Normalizer::default(), |e| {
            entries.push(e);
            true
        });
        (entries, report)
    }

    #[test]
    fn watch_stream_with_a_malformed_document_keeps_the_good_ones() {
        let input = format!(
            "{{\"type\":\"ADDED\",\"object\":{}}}\n{{\"type\":\"MODIFIED\",\"object\": {{ nope }}}}\n{{\"type\":\"DELETED\",\"object\":{}}}\n",
            pod("a", "1"),
            pod("a", "2")
        );
        let (entries, report) = run(&input);
        assert_eq!(entries.len(), 2, "{report:?}");
        assert!(matches!(entries[0], Change::Applied(_)));
        assert!(matches!(entries[1], Change::Removed(_)));
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(report.problems[0].starts_with("in.json:2:"), "{report:?}");
    }

    #[test]
    fn lists_fill_in_item_kinds_and_bookmarks_are_ignored() {
        let item = pod("b", "5").replace(r#""apiVersion":"v1","kind":"Pod","#, "");
        let input = format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"PodList\",\"items\":[{item}]}}\n{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"Pod\"}}}}"
        );
        let (entries, report) = run(&input);
        assert_eq!(entries.len(), 1, "{report:?}");
        assert_eq!(report.ignored, 1);
        assert!(report.problems.is_empty(), "{report:?}");
    }

    fn events(n: usize) -> String {
        (0..n)
            .map(|i| {
                format!(
                    "{{\"type\":\"ADDED\",\"object\":{}}}\n",
                    pod(&format!("p{i}"), &(i + 1).to_string())
                )
            })
            .collect()
    }

    fn names(entries: &[Entry]) -> Vec<String> {
        entries.iter().map(|e| e.uid().to_owned()).collect()
    }

    #[test]
    fn batches_keep_input_order_and_the_last_partial_one() {
        let input = events(7);
        let (single, _) = run(&input);
        let mut sizes = Vec::new();
        let mut batched = Vec::new();
        let report = replay_batches(
            input.as_bytes(),
            "in.json",
            &Normalizer::default(),
            3,
            |b| {
                sizes.push(b.len());
                batched.extend(b);
                true
            },
        );
        assert_eq!(sizes, vec![3, 3, 1]);
        assert_eq!(report.entries, 7);
        assert_eq!(names(&batched), names(&single));
        assert_eq!(names(&batched)[0], "uid-p0");
        assert_eq!(names(&batched)[6], "uid-p6");
    }

    #[test]
    fn a_batch_goes_before_the_reader_is_read_again() {
        // A reader handing over one document per read, as a pipe from
        // `kubectl get --watch` does: each entry must go out before the
        // next read, not wait for the batch to fill.
        struct OnePerRead {
            docs: Vec<String>,
            reads: std::rc::Rc<std::cell::Cell<usize>>,
            current: Vec<u8>,
        }
        impl std::io::Read for OnePerRead {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                unreachable!("read through BufRead")
            }
        }
        impl BufRead for OnePerRead {
            fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
                if self.current.is_empty() && !self.docs.is_empty() {
                    self.current = self.docs.remove(0).into_bytes();
                    self.reads.set(self.reads.get() + 1);
                }
                Ok(&self.current)
            }
            fn consume(&mut self, n: usize) {
                self.current.drain(..n);
            }
        }
        let reads = std::rc::Rc::new(std::cell::Cell::new(0));
        let reader = OnePerRead {
            docs: events(3).lines().map(|l| format!("{l}\n")).collect(),
            reads: reads.clone(),
            current: Vec::new(),
        };
        let mut seen = Vec::new();
        replay_batches(reader, "in.json", &Normalizer::default(), 100, |b| {
            seen.push((reads.get(), b.len()));
            true
        });
        assert_eq!(seen, vec![(1, 1), (2, 1), (3, 1)]);
    }

    #[test]
    fn a_batch_refused_stops_the_reading() {
        let mut calls = 0;
        let report = replay_batches(
            events(10).as_bytes(),
            "in.json",
            &Normalizer::default(),
            2,
            |b| {
                assert_eq!(b.len(), 2);
                calls += 1;
                calls < 2
            },
        );
        assert_eq!(calls, 2, "no batch after the refused one");
        assert_eq!(report.entries, 4, "{report:?}");
        // One entry at a time, as before.
        let mut taken = 0;
        let report = replay(
            events(10).as_bytes(),
            "in.json",
            &Normalizer::default(),
            |_| {
                taken += 1;
                taken < 3
            },
        );
        assert_eq!(taken, 3);
        assert_eq!(report.entries, 3);
    }

    #[test]
    fn the_fast_path_reads_escaped_text_and_the_deletion_time() {
        // Escapes make the decoder copy instead of borrowing: the same
        // entries either way. The deletion's time is the object's
        // deletionTimestamp.
        let deleted = pod("d", "7").replace(
            r#""creationTimestamp""#,
            r#""deletionTimestamp":"2024-01-02T03:04:05Z","creationTimestamp""#,
        );
        let escaped = pod("e", "8")
            .replace(r#""apiVersion":"v1""#, r#""apiVersion":"v\u0031""#)
            .replace(r#""kind":"Pod""#, r#""kind":"P\u006fd""#);
        let input = format!(
            "{{\"type\":\"DELETED\",\"object\":{deleted}}}\n{{\"type\":\"MODIFI\\u0045D\",\"object\":{escaped}}}\n"
        );
        for doc in input.lines() {
            assert!(
                watch_event(doc.as_bytes()).is_some(),
                "not on the fast path: {doc}"
            );
        }
        let (entries, report) = run(&input);
        assert!(report.problems.is_empty(), "{report:?}");
        assert_eq!(names(&entries), vec!["uid-d", "uid-e"]);
        let want = kubesink_normalize::time::parse("2024-01-02T03:04:05Z");
        assert_eq!(entries[0].removed_at(), want);
        assert!(want.is_some());
        assert!(matches!(entries[1], Change::Applied(_)));
    }

    #[test]
    fn non_object_documents_are_named() {
        let (_, report) = run("[1]\n");
        assert_eq!(report.problems.len(), 1);
        assert!(report.problems[0].contains("in.json:1"), "{report:?}");
    }
}
