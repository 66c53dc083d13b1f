//! Test guest `packed-v1`: a sink built against kubesink:sink@0.2.2 (the
//! WIT kept in `tests/guests/v0.2.2/wit`), exporting `packed` with only
//! `write-packed` (layout 1), as sinks built before 0.2.3 do. A host at
//! 0.2.3 must keep calling it with layout 1.
//!
//! Settings: none. `init` opens connection `main` (SQLite) and creates
//! `received (uid, kind, change_kind, text)`; `write-packed` decodes the
//! buffer with `kubesink-packed` (layout 1) and inserts one row per change,
//! `text` being an event's message, a pod's image or a job's status; `write`
//! is refused (`fatal`), so a batch that reaches the guest any other way
//! fails the test.

// wit-bindgen's generated canonical-ABI glue (exports, lifting, lowering)
// is unsafe code by nature; nothing hand-written here is.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../v0.2.2/wit", world: "packed-sink-world" });

    use super::PackedV1;
    export!(PackedV1);
}

use std::cell::RefCell;

use bindings::exports::kubesink::sink::packed::Guest as PackedGuest;
use bindings::exports::kubesink::sink::sink::Guest;
use bindings::kubesink::sink::sql::{Connection, Statement, Value};
use bindings::kubesink::sink::types::{Change, Error, HeldPage, RecordKind, Shape, Wants};

thread_local! {
    static CONN: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

struct PackedV1;

fn sql_error(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Fatal(format!("{what}: {e:?}"))
}

impl Guest for PackedV1 {
    fn init(_settings: Vec<(String, String)>) -> Result<Wants, Error> {
        let conn = Connection::open("main").map_err(|e| sql_error("open main", e))?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS received (uid TEXT PRIMARY KEY, kind TEXT NOT NULL, \
             change_kind TEXT NOT NULL, text TEXT NOT NULL)",
            &[],
        )
        .map_err(|e| sql_error("create table received", e))?;
        CONN.with_borrow_mut(|c| *c = Some(conn));
        Ok(Wants {
            kinds: Vec::new(),
            shape: Shape::Log,
            fields: Vec::new(),
        })
    }

    fn write(_batch: Vec<Change>) -> Result<(), Error> {
        Err(Error::Fatal(
            "packed-v1: `write` called; this sink exports `write-packed`".into(),
        ))
    }

    fn held(_kind: RecordKind, _cursor: Option<String>, _limit: u32) -> Result<HeldPage, Error> {
        Ok(HeldPage {
            uids: Vec::new(),
            next: None,
        })
    }
}

impl PackedGuest for PackedV1 {
    fn write_packed(batch: Vec<u8>) -> Result<(), Error> {
        use kubesink_packed::{Change as C, Record as R};
        let batch =
            kubesink_packed::decode(&batch).map_err(|e| Error::Fatal(format!("packed-v1: {e}")))?;
        let row = |uid: &str, kind: &str, change: &str, text: &str| Statement {
            sql: "INSERT OR REPLACE INTO received (uid, kind, change_kind, text) \
                  VALUES (?, ?, ?, ?)"
                .into(),
            params: [uid, kind, change, text]
                .into_iter()
                .map(|s| Value::Text(s.into()))
                .collect(),
        };
        let statements: Vec<Statement> = batch
            .iter()
            .map(|change| {
                let (change, record) = match change {
                    C::Applied(r) => ("applied", r),
                    C::Removed(r) => ("removed", &r.record),
                    C::Tombstone(t) => return row(t.uid, "tombstone", "tombstone", ""),
                };
                match record {
                    R::Job(j) => row(j.meta.uid, "job", change, j.status),
                    R::Pod(p) => row(p.meta.uid, "pod", change, p.image),
                    R::Event(e) => row(e.meta.uid, "event", change, e.message),
                }
            })
            .collect();
        CONN.with_borrow(|conn| {
            conn.as_ref()
                .ok_or_else(|| Error::Fatal("packed-v1: write before init".into()))?
                .execute_batch(&statements)
                .map(|_| ())
                .map_err(|e| sql_error("write batch", e))
        })
    }
}
