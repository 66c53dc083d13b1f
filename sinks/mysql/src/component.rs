//! The wasm export: binds the `packed-sink-world` of `wit/sink.wit` with
//! wit-bindgen and adapts it to [`crate::MysqlSink`] (records borrowed into
//! [`crate::model`] from the packed buffer of `write-packed`, or from the
//! batch of `write`; the `sql` connection wrapped as a [`crate::Db`]).

use std::cell::RefCell;

use kubesink_packed::statements::StatementsWriter;

use crate::db::{Db, Dialect, SqlError, Statement, Value};
use crate::model;
use crate::sink::{MysqlSink, SinkError};

wit_bindgen::generate!({
    path: "../../wit",
    world: "packed-sink-world",
    // Statement parameters borrow the batch's text (`sql::ValueParam`)
    // instead of owning a copy of each.
    ownership: Borrowing {
        duplicate_if_necessary: true
    },
});

use exports::kubesink::sink::packed::Guest as PackedGuest;
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

fn to_wit_value<'a>(v: &'a Value<'_>) -> sql::ValueParam<'a> {
    match v {
        Value::Null => sql::ValueParam::Null,
        Value::Int(i) => sql::ValueParam::Int(*i),
        Value::Uint(u) => sql::ValueParam::Uint(*u),
        Value::Float(f) => sql::ValueParam::Float(*f),
        Value::Text(s) => sql::ValueParam::Text(s),
        Value::Bytes(b) => sql::ValueParam::Bytes(b),
        Value::Timestamp(t) => sql::ValueParam::Timestamp(to_wit_ts(*t)),
    }
}

fn from_wit_value(v: sql::ValueResult) -> Value<'static> {
    match v {
        sql::ValueResult::Null => Value::Null,
        sql::ValueResult::Int(i) => Value::Int(i),
        sql::ValueResult::Uint(u) => Value::Uint(u),
        sql::ValueResult::Float(f) => Value::Float(f),
        sql::ValueResult::Text(s) => Value::Text(s.into()),
        sql::ValueResult::Bytes(b) => Value::Bytes(b),
        sql::ValueResult::Timestamp(t) => Value::Timestamp(from_wit_ts(t)),
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

/// The parameters as the host's `execute` takes them, borrowing their text.
fn params<'a>(values: &'a [Value<'_>]) -> Vec<sql::ValueParam<'a>> {
    values.iter().map(to_wit_value).collect()
}

impl Db for HostDb {
    fn dialect(&self) -> Dialect {
        match self.0.engine() {
            sql::Engine::Mysql => Dialect::Mysql,
            sql::Engine::Sqlite => Dialect::Sqlite,
            sql::Engine::Postgres => Dialect::Postgres,
        }
    }

    fn execute(&mut self, st: Statement<'_>) -> Result<u64, SqlError> {
        self.0
            .execute(&st.sql, &params(&st.params))
            .map_err(from_wit_error)
    }

    fn query(&mut self, st: Statement<'_>) -> Result<Vec<Vec<Value<'static>>>, SqlError> {
        self.0
            .query(&st.sql, &params(&st.params))
            .map(|rows| {
                rows.into_iter()
                    .map(|r| r.into_iter().map(from_wit_value).collect())
                    .collect()
            })
            .map_err(from_wit_error)
    }

    /// The statements cross as one buffer (`execute-batch-packed`), which
    /// the host reads without lifting a `string` per parameter.
    fn execute_batch(&mut self, statements: Vec<Statement<'_>>) -> Result<u64, SqlError> {
        let (records, text) = statements.iter().fold((0, 0), |(r, t), st| {
            let (pr, pt) = st.params.iter().fold((0, 0), |(r, t), v| match v {
                Value::Text(s) => (r + 5, t + s.len()),
                Value::Bytes(b) => (r + 5 + b.len(), t),
                _ => (r + 13, t),
            });
            (r + 8 + pr, t + st.sql.len() + pt)
        });
        let mut packed = StatementsWriter::with_capacity(records, text);
        for st in &statements {
            packed.statement(&st.sql, st.params.iter().map(Value::as_param));
        }
        let packed = packed
            .finish()
            .map_err(|e| SqlError::TooLarge(format!("mysql sink: {e}")))?;
        self.0.execute_batch_packed(&packed).map_err(from_wit_error)
    }
}

fn held_kind(kind: wit::RecordKind) -> crate::HeldKind {
    match kind {
        wit::RecordKind::Job => crate::HeldKind::Job,
        wit::RecordKind::Pod => crate::HeldKind::Pod,
        wit::RecordKind::Event => crate::HeldKind::Event,
    }
}

kubesink_packed::impl_from_wit!(kubesink::sink::types);

/// Writes `batch` with the sink of this instance.
fn write_batch(batch: &[model::Entry<'_>]) -> Result<(), wit::Error> {
    SINK.with(|s| match s.borrow_mut().as_mut() {
        Some(sink) => sink.write(batch).map(|_| ()).map_err(to_wit_error),
        None => Err(wit::Error::Fatal(
            "mysql sink: write called before a successful init".to_owned(),
        )),
    })
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
        let batch: Vec<model::Entry<'_>> = packed_batch(&batch)
            .iter()
            .map(model::Entry::from_packed)
            .collect();
        write_batch(&batch)
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

impl PackedGuest for Component {
    fn write_packed(batch: Vec<u8>) -> Result<(), wit::Error> {
        write_changes(kubesink_packed::changes(&batch))
    }

    fn write_packed_v2(batch: Vec<u8>) -> Result<(), wit::Error> {
        write_changes(kubesink_packed::changes_v2(&batch))
    }
}

/// Moves a packed batch's changes into the model, then writes them.
fn write_changes(
    changes: Result<kubesink_packed::Changes<'_>, kubesink_packed::DecodeError>,
) -> Result<(), wit::Error> {
    let fatal = |e: kubesink_packed::DecodeError| wit::Error::Fatal(format!("mysql sink: {e}"));
    let changes = changes.map_err(fatal)?;
    let mut entries = Vec::with_capacity(changes.capacity_hint());
    for change in changes {
        entries.push(model::Entry::from_packed(&change.map_err(fatal)?));
    }
    write_batch(&entries)
}

export!(Component);
