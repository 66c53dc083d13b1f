//! The wasm export: binds the `sink-world` of `wit/sink.wit` with
//! wit-bindgen and adapts it to [`crate::MysqlSink`] (records moved into
//! [`crate::model`], the `sql` connection wrapped as a [`crate::Db`]).

use std::cell::RefCell;

use crate::db::{Db, Dialect, SqlError, Statement, Value};
use crate::model;
use crate::sink::{MysqlSink, SinkError};

wit_bindgen::generate!({
    path: "../../wit",
    world: "sink-world",
});

use exports::kubesink::sink::sink::Guest;
use kubesink::sink::sql;
use kubesink::sink::types as wit;

/// The host's connection as a [`Db`].
struct HostDb(sql::Connection);

fn to_wit_ts(t: model::Timestamp) -> wit::Timestamp {
    wit::Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
    }
}

fn from_wit_ts(t: wit::Timestamp) -> model::Timestamp {
    model::Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
    }
}

fn to_wit_value(v: Value) -> sql::Value {
    match v {
        Value::Null => sql::Value::Null,
        Value::Int(i) => sql::Value::Int(i),
        Value::Uint(u) => sql::Value::Uint(u),
        Value::Float(f) => sql::Value::Float(f),
        Value::Text(s) => sql::Value::Text(s),
        Value::Bytes(b) => sql::Value::Bytes(b),
        Value::Timestamp(t) => sql::Value::Timestamp(to_wit_ts(t)),
    }
}

fn from_wit_value(v: sql::Value) -> Value {
    match v {
        sql::Value::Null => Value::Null,
        sql::Value::Int(i) => Value::Int(i),
        sql::Value::Uint(u) => Value::Uint(u),
        sql::Value::Float(f) => Value::Float(f),
        sql::Value::Text(s) => Value::Text(s),
        sql::Value::Bytes(b) => Value::Bytes(b),
        sql::Value::Timestamp(t) => Value::Timestamp(from_wit_ts(t)),
    }
}

fn from_wit_error(e: sql::SqlError) -> SqlError {
    match e {
        sql::SqlError::Denied(m) => SqlError::Denied(m),
        sql::SqlError::Rejected(m) => SqlError::Rejected(m),
        sql::SqlError::Unavailable(m) => SqlError::Unavailable(m),
        sql::SqlError::TooLarge(m) => SqlError::TooLarge(m),
    }
}

fn params(values: Vec<Value>) -> Vec<sql::Value> {
    values.into_iter().map(to_wit_value).collect()
}

impl Db for HostDb {
    fn dialect(&self) -> Dialect {
        match self.0.engine() {
            sql::Engine::Mysql => Dialect::Mysql,
            sql::Engine::Sqlite => Dialect::Sqlite,
            sql::Engine::Postgres => Dialect::Postgres,
        }
    }

    fn execute(&mut self, st: Statement) -> Result<u64, SqlError> {
        self.0
            .execute(&st.sql, &params(st.params))
            .map_err(from_wit_error)
    }

    fn query(&mut self, st: Statement) -> Result<Vec<Vec<Value>>, SqlError> {
        self.0
            .query(&st.sql, &params(st.params))
            .map(|rows| {
                rows.into_iter()
                    .map(|r| r.into_iter().map(from_wit_value).collect())
                    .collect()
            })
            .map_err(from_wit_error)
    }

    fn execute_batch(&mut self, statements: Vec<Statement>) -> Result<u64, SqlError> {
        let statements: Vec<sql::Statement> = statements
            .into_iter()
            .map(|st| sql::Statement {
                sql: st.sql,
                params: params(st.params),
            })
            .collect();
        self.0.execute_batch(&statements).map_err(from_wit_error)
    }
}

fn meta(m: wit::Meta) -> model::Meta {
    model::Meta {
        uid: m.uid,
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        resource_version_num: m.resource_version_num,
        labels: m.labels,
        created: from_wit_ts(m.created),
    }
}

fn record(r: wit::Record) -> model::Record {
    match r {
        wit::Record::Job(j) => model::Record::Job(model::Job {
            meta: meta(j.meta),
            api_version: j.api_version,
            kind: j.kind,
            status: j.status,
            resources: j.resources,
            tenant: j.tenant,
            owner: j.owner,
            region: j.region,
            modified: from_wit_ts(j.modified),
            running_at: j.running_at.map(from_wit_ts),
            finished_at: j.finished_at.map(from_wit_ts),
            remark: j.remark,
        }),
        wit::Record::Pod(p) => model::Record::Pod(model::Pod {
            meta: meta(p.meta),
            job_uid: p.job_uid,
            job_kind: p.job_kind,
            replica_type: p.replica_type,
            status: p.status,
            image: p.image,
            resources: p.resources,
            host_ip: p.host_ip,
            pod_ip: p.pod_ip,
            region: p.region,
            modified: from_wit_ts(p.modified),
            started_at: p.started_at.map(from_wit_ts),
            finished_at: p.finished_at.map(from_wit_ts),
            remark: p.remark,
        }),
        wit::Record::Event(e) => model::Record::Event(model::Event {
            meta: meta(e.meta),
            involved: model::ObjectRef {
                api_version: e.involved.api_version,
                kind: e.involved.kind,
                namespace: e.involved.namespace,
                name: e.involved.name,
                uid: e.involved.uid,
            },
            event_type: e.event_type,
            reason: e.reason,
            message: e.message,
            source: e.source,
            count: e.count,
            first_seen: from_wit_ts(e.first_seen),
            last_seen: from_wit_ts(e.last_seen),
            region: e.region,
        }),
    }
}

fn held_kind(kind: wit::RecordKind) -> crate::HeldKind {
    match kind {
        wit::RecordKind::Job => crate::HeldKind::Job,
        wit::RecordKind::Pod => crate::HeldKind::Pod,
        wit::RecordKind::Event => crate::HeldKind::Event,
    }
}

/// A change as the sink's model has it ([`model::Entry::tombstone`] for a
/// tombstone).
fn entry(c: wit::Change) -> model::Entry {
    match c {
        wit::Change::Applied(r) => model::Entry {
            change: model::Change::Applied,
            record: record(r),
        },
        wit::Change::Removed(r) => model::Entry {
            change: model::Change::Removed(from_wit_ts(r.at)),
            record: record(r.record),
        },
        wit::Change::Tombstone(t) => {
            model::Entry::tombstone(held_kind(t.kind), t.uid, from_wit_ts(t.at))
        }
    }
}

fn to_wit_error(e: SinkError) -> wit::Error {
    match e {
        SinkError::Retryable(m) => wit::Error::Retryable(m),
        SinkError::Fatal(m) => wit::Error::Fatal(m),
    }
}

thread_local! {
    static SINK: RefCell<Option<MysqlSink<HostDb>>> = const { RefCell::new(None) };
}

struct Component;

impl Guest for Component {
    fn init(settings: Vec<(String, String)>) -> Result<wit::Wants, wit::Error> {
        let sink = MysqlSink::init(&settings, |name| {
            sql::Connection::open(name)
                .map(HostDb)
                .map_err(from_wit_error)
        })
        .map_err(to_wit_error)?;
        // stderr goes to the host's log (escaped there).
        for line in sink.migrations() {
            eprintln!("mysql sink: migrated: {line}");
        }
        let s = sink.planner().settings();
        let kinds = [
            (s.jobs, wit::RecordKind::Job),
            (s.pods, wit::RecordKind::Pod),
            (s.events, wit::RecordKind::Event),
        ]
        .into_iter()
        .filter_map(|(on, kind)| on.then_some(kind))
        .collect();
        SINK.with(|s| *s.borrow_mut() = Some(sink));
        Ok(wit::Wants {
            kinds,
            // One row per uid, upserted.
            shape: wit::Shape::State,
            // Labels are not stored (KubeDL's tables have no column).
            fields: vec![wit::OptionalField::Resources, wit::OptionalField::Messages],
        })
    }

    fn write(batch: Vec<wit::Change>) -> Result<(), wit::Error> {
        let batch: Vec<model::Entry> = batch.into_iter().map(entry).collect();
        SINK.with(|s| match s.borrow_mut().as_mut() {
            Some(sink) => sink.write(&batch).map(|_| ()).map_err(to_wit_error),
            None => Err(wit::Error::Fatal(
                "mysql sink: write called before a successful init".to_owned(),
            )),
        })
    }

    fn held(
        kind: wit::RecordKind,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<wit::HeldPage, wit::Error> {
        let kind = held_kind(kind);
        SINK.with(|s| match s.borrow_mut().as_mut() {
            Some(sink) => sink
                .held(kind, cursor.as_deref(), limit)
                .map(|(uids, next)| wit::HeldPage { uids, next })
                .map_err(to_wit_error),
            None => Err(wit::Error::Fatal(
                "mysql sink: held called before a successful init".to_owned(),
            )),
        })
    }
}

export!(Component);
