//! The native build of the mysql sink: [`kubesink_sink_mysql::MysqlSink`]
//! compiled for the host and calling the host's SQL implementation
//! ([`kubesink_host::sql::SqlConn`], the same pools, caps and error mapping
//! the wasm sink reaches through the `sql` capability) directly, without a
//! sandbox. The wasm/native ratio of the benchmarks compares exactly this
//! against the component.
//!
//! The sink logic is synchronous (as in the guest), the pools are async:
//! [`NativeDb`] blocks on a Tokio runtime handle, so it must be used from a
//! thread that is not driving that runtime (e.g. `spawn_blocking`).

use kubesink_host::sql::{self as host, SqlConn};
use kubesink_normalize::record::Timestamp as HostTimestamp;
use kubesink_sink_mysql::{Db, Dialect, SqlError, Statement, Timestamp, Value};
use tokio::runtime::Handle;

/// A [`Db`] over one of the host's named SQL connections.
#[derive(Debug)]
pub struct NativeDb {
    conn: SqlConn,
    runtime: Handle,
}

impl NativeDb {
    /// Wraps `conn`; calls block on `runtime`.
    #[must_use]
    pub fn new(conn: SqlConn, runtime: Handle) -> Self {
        Self { conn, runtime }
    }
}

/// The host's value, for `execute` and `query` (text copied into a
/// `String`, as lifting it out of a guest's memory copies it there).
fn to_host_value(v: Value<'_>) -> host::Value {
    match v {
        Value::Null => host::Value::Null,
        Value::Int(i) => host::Value::Int(i),
        Value::Uint(u) => host::Value::Uint(u),
        Value::Float(f) => host::Value::Float(f),
        Value::Text(s) => host::Value::Text(s.into_owned()),
        Value::Bytes(b) => host::Value::Bytes(b),
        Value::Timestamp(Timestamp { seconds, nanos }) => {
            host::Value::Timestamp(HostTimestamp { seconds, nanos })
        }
    }
}

fn from_host_value(v: host::Value) -> Value<'static> {
    match v {
        host::Value::Null => Value::Null,
        host::Value::Int(i) => Value::Int(i),
        host::Value::Uint(u) => Value::Uint(u),
        host::Value::Float(f) => Value::Float(f),
        host::Value::Text(s) => Value::Text(s.into()),
        host::Value::Bytes(b) => Value::Bytes(b),
        host::Value::Timestamp(HostTimestamp { seconds, nanos }) => {
            Value::Timestamp(Timestamp { seconds, nanos })
        }
    }
}

fn from_host_error(e: host::SqlError) -> SqlError {
    match e {
        host::SqlError::Denied(m) => SqlError::Denied(m),
        host::SqlError::Rejected(m) => SqlError::Rejected(m),
        host::SqlError::Unavailable(m) => SqlError::Unavailable(m),
        host::SqlError::TooLarge(m) => SqlError::TooLarge(m),
    }
}

fn params(values: Vec<Value<'_>>) -> Vec<host::Value> {
    values.into_iter().map(to_host_value).collect()
}

impl Db for NativeDb {
    fn dialect(&self) -> Dialect {
        match self.conn.engine() {
            host::Engine::Mysql => Dialect::Mysql,
            host::Engine::Sqlite => Dialect::Sqlite,
            host::Engine::Postgres => Dialect::Postgres,
        }
    }

    fn execute(&mut self, st: Statement<'_>) -> Result<u64, SqlError> {
        let p = params(st.params);
        self.runtime
            .block_on(self.conn.execute(&st.sql, &p))
            .map_err(from_host_error)
    }

    fn query(&mut self, st: Statement<'_>) -> Result<Vec<Vec<Value<'static>>>, SqlError> {
        let p = params(st.params);
        self.runtime
            .block_on(self.conn.query(&st.sql, &p))
            .map(|rows| {
                rows.into_iter()
                    .map(|r| r.into_iter().map(from_host_value).collect())
                    .collect()
            })
            .map_err(from_host_error)
    }

    /// The write path: parameters bound as borrowed slices of the sink's
    /// rows, as the host binds those of packed statements (the wasm sink's
    /// `execute-batch-packed`).
    fn execute_batch(&mut self, statements: Vec<Statement<'_>>) -> Result<u64, SqlError> {
        let statements: Vec<host::PackedStatement> = statements
            .iter()
            .map(|st| host::PackedStatement {
                sql: &st.sql,
                params: st.params.iter().map(Value::as_param).collect(),
            })
            .collect();
        self.runtime
            .block_on(self.conn.execute_batch_borrowed(&statements))
            .map_err(from_host_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesink_host::sql::{ConnectionConfig, SqlPools};
    use kubesink_sink_mysql::{Entry, MysqlSink};

    #[test]
    fn values_round_trip_through_the_host_types() {
        let vs = vec![
            Value::Null,
            Value::Int(-3),
            Value::Uint(7),
            Value::Float(1.5),
            Value::Text("t".into()),
            Value::Bytes(vec![1, 2]),
            Value::Timestamp(Timestamp {
                seconds: 5,
                nanos: 6,
            }),
        ];
        let back: Vec<Value> = params(vs.clone())
            .into_iter()
            .map(from_host_value)
            .collect();
        assert_eq!(back, vs);
    }

    /// The native sink writes through the host's pool (SQLite in memory,
    /// so this unit test needs no server) and reads its rows back.
    #[test]
    fn native_sink_writes_through_host_pool() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let pools =
            SqlPools::new(&[ConnectionConfig::new("default", "sqlite::memory:")]).expect("pools");
        let conn = pools.get("default").expect("connection");
        let handle = rt.handle().clone();
        let mut sink = MysqlSink::init(&[], |_| Ok(NativeDb::new(conn, handle))).expect("init");
        let entry = |uid: &'static str, rv: u64| Entry {
            change: kubesink_sink_mysql::Change::Applied,
            record: kubesink_sink_mysql::Record::Event(kubesink_sink_mysql::Event {
                meta: kubesink_sink_mysql::Meta {
                    uid: uid.into(),
                    name: format!("ev-{uid}").into(),
                    resource_version: rv.to_string().into(),
                    resource_version_num: rv,
                    ..Default::default()
                },
                count: 1,
                ..Default::default()
            }),
        };
        sink.write(&[entry("a", 1), entry("b", 2), entry("a", 3)])
            .expect("write");
        let events = kubesink_sink_mysql::HeldKind::Event;
        let (held, next) = sink.held(events, None, 10).expect("held");
        assert_eq!((held, next), (vec!["a".to_owned(), "b".to_owned()], None));
        // Pages of one: each full page names the next cursor.
        let page = |s: &mut MysqlSink<NativeDb>, after: Option<&str>| {
            s.held(events, after, 1).expect("held page")
        };
        assert_eq!(
            page(&mut sink, None),
            (vec!["a".to_owned()], Some("a".to_owned()))
        );
        assert_eq!(
            page(&mut sink, Some("a")),
            (vec!["b".to_owned()], Some("b".to_owned()))
        );
        assert_eq!(page(&mut sink, Some("b")), (vec![], None));
        let rows = sink
            .db_mut()
            .query(Statement::plain(
                "SELECT version_num FROM event_info WHERE event_id = 'a'",
            ))
            .expect("query");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][0].as_i64(), Some(3), "later entry wins");
    }
}
