//! Well-behaved test guest `counter`: records every entry it receives, one
//! row per uid, through the host's `sql` capability, so a test can read back
//! what it got.
//!
//! Settings: `connection` (default `main`), the sql connection to open.
//! `init` opens it and creates table `received (uid, kind, change_kind,
//! batches)`; `write` upserts one row per change (`change_kind`:
//! `applied`, `removed` or `tombstone`) in one transaction and
//! counts how many batches carried each uid. A connection error during
//! `open` is returned as `fatal` (`denied`, `rejected`, `too-large`) or
//! `retryable` (`unavailable`), with the case name in the message.

// wit-bindgen's generated canonical-ABI glue (exports, lifting, lowering)
// is unsafe code by nature; nothing hand-written here is.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "sink-world" });

    use super::Counter;
    export!(Counter);
}

use std::cell::RefCell;

use bindings::exports::kubesink::sink::sink::Guest;
use bindings::kubesink::sink::sql::{Connection, Engine, SqlError, Statement, Value};
use bindings::kubesink::sink::types::{
    Change, Error, HeldPage, Record, RecordKind, Shape, Tombstone, Wants,
};

thread_local! {
    static CONN: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

fn to_error(what: &str, e: SqlError) -> Error {
    match e {
        SqlError::Unavailable(m) => Error::Retryable(format!("{what}: unavailable: {m}")),
        SqlError::Denied(m) => Error::Fatal(format!("{what}: denied: {m}")),
        SqlError::Rejected(m) => Error::Fatal(format!("{what}: rejected: {m}")),
        SqlError::TooLarge(m) => Error::Fatal(format!("{what}: too-large: {m}")),
    }
}

struct Counter;

/// The upsert of one received change.
fn statement(upsert: &str, uid: String, kind: &str, change: &str) -> Statement {
    Statement {
        sql: upsert.to_string(),
        params: vec![
            Value::Text(uid),
            Value::Text(kind.into()),
            Value::Text(change.into()),
        ],
    }
}

impl Guest for Counter {
    fn init(settings: Vec<(String, String)>) -> Result<Wants, Error> {
        let mut name = "main".to_string();
        for (k, v) in settings {
            match k.as_str() {
                "connection" => name = v,
                other => return Err(Error::Fatal(format!("unknown setting {other}"))),
            }
        }
        let conn = Connection::open(&name).map_err(|e| to_error(&format!("open {name}"), e))?;
        let create = match conn.engine() {
            Engine::Mysql | Engine::Postgres => {
                "CREATE TABLE IF NOT EXISTS received (uid VARCHAR(64) PRIMARY KEY, \
                 kind VARCHAR(16) NOT NULL, change_kind VARCHAR(16) NOT NULL, \
                 batches BIGINT NOT NULL)"
            }
            _ => {
                "CREATE TABLE IF NOT EXISTS received (uid TEXT PRIMARY KEY, \
                 kind TEXT NOT NULL, change_kind TEXT NOT NULL, batches INTEGER NOT NULL)"
            }
        };
        conn.execute(create, &[])
            .map_err(|e| to_error("create table received", e))?;
        CONN.with_borrow_mut(|c| *c = Some(conn));
        println!("counter guest ready on connection {name}");
        Ok(Wants {
            kinds: Vec::new(),
            shape: Shape::State,
            fields: Vec::new(),
        })
    }

    kubesink_guest_common::nothing_held!();

    fn write(batch: Vec<Change>) -> Result<(), Error> {
        CONN.with_borrow(|conn| {
            let conn = conn
                .as_ref()
                .ok_or_else(|| Error::Fatal("write before init".into()))?;
            let upsert = match conn.engine() {
                Engine::Mysql => {
                    "INSERT INTO received (uid, kind, change_kind, batches) VALUES (?, ?, ?, 1) \
                     ON DUPLICATE KEY UPDATE kind = VALUES(kind), \
                     change_kind = VALUES(change_kind), batches = batches + 1"
                }
                Engine::Postgres => {
                    "INSERT INTO received (uid, kind, change_kind, batches) VALUES ($1, $2, $3, 1) \
                     ON CONFLICT(uid) DO UPDATE SET kind = excluded.kind, \
                     change_kind = excluded.change_kind, batches = received.batches + 1"
                }
                _ => {
                    "INSERT INTO received (uid, kind, change_kind, batches) VALUES (?, ?, ?, 1) \
                     ON CONFLICT(uid) DO UPDATE SET kind = excluded.kind, \
                     change_kind = excluded.change_kind, batches = batches + 1"
                }
            };
            let statements: Vec<Statement> = batch
                .iter()
                .map(|entry| {
                    let (change, record) = match entry {
                        Change::Applied(r) => ("applied", r),
                        Change::Removed(r) => ("removed", &r.record),
                        Change::Tombstone(Tombstone { kind, uid, .. }) => {
                            let kind = match kind {
                                RecordKind::Job => "job",
                                RecordKind::Pod => "pod",
                                RecordKind::Event => "event",
                            };
                            return statement(upsert, uid.clone(), kind, "tombstone");
                        }
                    };
                    let (kind, uid) = match record {
                        Record::Job(j) => ("job", j.meta.uid.clone()),
                        Record::Pod(p) => ("pod", p.meta.uid.clone()),
                        Record::Event(e) => ("event", e.meta.uid.clone()),
                    };
                    statement(upsert, uid, kind, change)
                })
                .collect();
            conn.execute_batch(&statements)
                .map(|_| ())
                .map_err(|e| to_error("write batch", e))
        })
    }
}
