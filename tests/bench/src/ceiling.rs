//! The ceiling: the same rows the mysql sink writes (its tables, its column
//! values from [`kubesink_sink_mysql::rows::row_of`]), written by plain
//! batched sqlx upserts from Rust: one transaction per batch, multi-row
//! `INSERT ... ON DUPLICATE KEY UPDATE col = VALUES(col)` of up to
//! [`ROWS_PER_STATEMENT`] rows (cut into the sink's statement sizes, so the
//! driver's statement cache works for it too), no version guards, no
//! in-batch collapse, no
//! sandbox and no capability layer. Nothing kubesink does can be faster
//! than this on the same database.

use kubesink_sink_mysql::rows::row_of;
use kubesink_sink_mysql::schema::{Table, create_statements, quote};
use kubesink_sink_mysql::sink::statement_sizes;
use kubesink_sink_mysql::{Dialect, Entry, Planner, Settings, Value};
use sqlx::mysql::MySqlPool;
use sqlx::{AssertSqlSafe, MySql};

/// Rows per multi-row upsert, as the mysql sink's default
/// `max_rows_per_statement`.
pub const ROWS_PER_STATEMENT: usize = 500;

/// Why the ceiling writer failed; names the table.
#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    /// The database refused a statement.
    #[error("table `{table}`: {source}")]
    Sql {
        /// The table (or `transaction`).
        table: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
}

/// A plain sqlx writer of the mysql sink's rows.
#[derive(Debug)]
pub struct Ceiling {
    pool: MySqlPool,
    tables: Vec<(Table, String, String)>,
}

fn sql_err(table: &str) -> impl Fn(sqlx::Error) -> CeilingError + '_ {
    move |source| CeilingError::Sql {
        table: table.to_owned(),
        source,
    }
}

impl Ceiling {
    /// Creates the mysql sink's tables in `pool`'s database (if missing)
    /// and prepares the statements.
    pub async fn new(pool: MySqlPool) -> Result<Self, CeilingError> {
        let planner = Planner::new(Settings::default(), Dialect::Mysql);
        let mut tables = Vec::new();
        for table in planner.tables() {
            for st in create_statements(Dialect::Mysql, table) {
                sqlx::query(AssertSqlSafe(st.sql))
                    .execute(&pool)
                    .await
                    .map_err(sql_err(table.name.as_str()))?;
            }
            let q = |c: &str| quote(Dialect::Mysql, c);
            let cols: Vec<String> = table.columns.iter().map(|c| q(c.name)).collect();
            let head = format!(
                "INSERT INTO {} ({}) VALUES ",
                q(table.name.as_str()),
                cols.join(", ")
            );
            let key = table.key_name();
            let tail = format!(
                " ON DUPLICATE KEY UPDATE {}",
                table
                    .columns
                    .iter()
                    .filter(|c| c.name != key)
                    .map(|c| format!("{0} = VALUES({0})", q(c.name)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            tables.push((table.clone(), head, tail));
        }
        Ok(Self { pool, tables })
    }

    /// Writes `batch` in one transaction; returns the rows affected.
    pub async fn write(&self, batch: &[Entry<'_>]) -> Result<u64, CeilingError> {
        let mut tx = self.pool.begin().await.map_err(sql_err("transaction"))?;
        let mut affected = 0;
        for (table, head, tail) in &self.tables {
            let rows: Vec<_> = batch
                .iter()
                .filter(|e| kubesink_sink_mysql::rows::kind_of(&e.record) == table.kind)
                .map(|e| row_of(table, e))
                .collect();
            let placeholder = format!("({})", vec!["?"; table.columns.len()].join(", "));
            let mut rest = rows.as_slice();
            let sizes = rows
                .chunks(ROWS_PER_STATEMENT)
                .flat_map(|c| statement_sizes(c.len(), ROWS_PER_STATEMENT));
            for size in sizes {
                let (chunk, tail_rows) = rest.split_at(size);
                rest = tail_rows;
                let mut sql = head.clone();
                for i in 0..chunk.len() {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&placeholder);
                }
                sql.push_str(tail);
                let mut q = sqlx::query::<MySql>(AssertSqlSafe(sql));
                for row in chunk {
                    for v in &row.values {
                        q = bind(q, v);
                    }
                }
                affected += q
                    .execute(&mut *tx)
                    .await
                    .map_err(sql_err(table.name.as_str()))?
                    .rows_affected();
            }
        }
        tx.commit().await.map_err(sql_err("transaction"))?;
        Ok(affected)
    }
}

type Query<'q> = sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments>;

fn bind<'q>(q: Query<'q>, v: &Value) -> Query<'q> {
    match v {
        Value::Null => q.bind(None::<String>),
        Value::Int(i) => q.bind(*i),
        Value::Uint(u) => q.bind(*u),
        Value::Float(f) => q.bind(*f),
        Value::Text(s) => q.bind(s.clone()),
        Value::Bytes(b) => q.bind(b.clone()),
        Value::Timestamp(t) => {
            q.bind(chrono::DateTime::from_timestamp(t.seconds, t.nanos).map(|d| d.naive_utc()))
        }
    }
}
