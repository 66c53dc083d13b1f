//! The sink itself, independent of the bindings: [`Planner`] turns settings
//! and batches into statements (pure), and [`MysqlSink`] runs them on a
//! [`Db`]: `init` creates or completes the tables, `write` upserts a batch
//! in one transaction.

use crate::db::{Db, Dialect, SqlError, Statement, Value};
use crate::model::Entry;
use crate::rows::{TableRows, kind_of};
use crate::schema::{self, Kind, Table, Upsert};
use crate::settings::{Settings, SettingsError};

/// Why `init` or `write` failed; the case tells the host what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Transient (database unreachable): the host retries the batch later.
    #[error("{0}")]
    Retryable(String),
    /// Permanent (bad settings, rejected statement): retrying won't help.
    #[error("{0}")]
    Fatal(String),
}

impl From<SettingsError> for SinkError {
    fn from(e: SettingsError) -> Self {
        SinkError::Fatal(format!("mysql sink settings: {e}"))
    }
}

/// `unavailable` is retryable; `denied`, `rejected` and `too-large` are fatal.
fn sql_error(context: &str, e: SqlError) -> SinkError {
    let msg = format!("mysql sink: {context}: {e}");
    if e.is_retryable() {
        SinkError::Retryable(msg)
    } else {
        SinkError::Fatal(msg)
    }
}

/// The statements of one batch.
#[derive(Debug, Clone, Default)]
pub struct Plan<'a> {
    /// Multi-row upserts, grouped by table (jobs, pods, events).
    pub statements: Vec<Statement<'a>>,
    /// Names of the tables written, for messages.
    pub tables: Vec<String>,
    /// Rows written after collapsing duplicates.
    pub rows: usize,
}

/// Settings, dialect and per-table SQL, ready to turn batches into
/// statements. Pure: a native caller can use it to drive its own
/// connection (e.g. an async pool) with exactly the sink's SQL.
///
/// ```
/// use kubesink_sink_mysql::{Change, Dialect, Entry, Job, Meta, Planner, Record, Settings};
///
/// let planner = Planner::new(Settings::default(), Dialect::Sqlite);
/// // Run these once (CREATE TABLE IF NOT EXISTS ...).
/// assert_eq!(planner.create_statements().len(), 5);
/// let job = |rv: u64| Entry {
///     change: Change::Applied,
///     record: Record::Job(Job {
///         meta: Meta { uid: "u1".into(), resource_version_num: rv, ..Meta::default() },
///         status: "Running".into(),
///         ..Job::default()
///     }),
/// };
/// // Two entries for one uid: one row, in one statement; run the
/// // statements of a plan in one transaction. Their text parameters
/// // borrow from the batch.
/// let batch = [job(1), job(2)];
/// let plan = planner.plan(&batch);
/// assert_eq!((plan.statements.len(), plan.rows), (1, 1));
/// assert!(plan.statements[0].sql.starts_with("INSERT INTO \"job_info\""));
/// ```
#[derive(Debug, Clone)]
pub struct Planner {
    settings: Settings,
    dialect: Dialect,
    tables: Vec<(Table, Upsert)>,
}

impl Planner {
    /// Prepare the SQL for `settings` in `dialect`.
    #[must_use]
    pub fn new(settings: Settings, dialect: Dialect) -> Self {
        let mut tables = Vec::new();
        for (on, kind, name) in [
            (settings.jobs, Kind::Job, &settings.job_table),
            (settings.pods, Kind::Pod, &settings.pod_table),
            (settings.events, Kind::Event, &settings.event_table),
        ] {
            if on {
                let table = Table::new(kind, name.clone());
                let upsert = schema::upsert(dialect, &table);
                tables.push((table, upsert));
            }
        }
        Self {
            settings,
            dialect,
            tables,
        }
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The dialect.
    #[must_use]
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The enabled tables.
    pub fn tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.iter().map(|(t, _)| t)
    }

    /// The `CREATE TABLE IF NOT EXISTS` statements of the enabled tables.
    #[must_use]
    pub fn create_statements(&self) -> Vec<Statement<'static>> {
        self.tables()
            .flat_map(|t| schema::create_statements(self.dialect, t))
            .collect()
    }

    /// The upserts for `batch`: entries of disabled kinds are skipped,
    /// entries for the same uid collapse into one row (the later wins, by
    /// the database's own rule), and rows are packed into statements of at
    /// most `max_rows_per_statement` rows and about `max_statement_bytes`.
    #[must_use]
    pub fn plan<'a>(&self, batch: &'a [Entry<'_>]) -> Plan<'a> {
        let mut per_table: Vec<TableRows> = self
            .tables
            .iter()
            .map(|(t, _)| TableRows::new(t.clone()))
            .collect();
        for entry in batch {
            let kind = kind_of(&entry.record);
            if let Some(rows) = per_table.iter_mut().find(|r| r.table.kind == kind) {
                rows.push(entry);
            }
        }
        let mut plan = Plan::default();
        for (rows, (_, upsert)) in per_table.into_iter().zip(&self.tables) {
            if rows.rows.is_empty() {
                continue;
            }
            plan.tables.push(rows.table.name.to_string());
            plan.rows += rows.rows.len();
            self.pack(upsert, rows.rows, &mut plan.statements);
        }
        plan
    }

    fn pack<'a>(
        &self,
        upsert: &Upsert,
        rows: Vec<crate::rows::Row<'a>>,
        out: &mut Vec<Statement<'a>>,
    ) {
        let max_rows = self.settings.max_rows_per_statement;
        let max_bytes = self.settings.max_statement_bytes;
        let fixed = upsert.head.len() + upsert.tail.len();
        let per_row_sql = upsert.row_len() + 1;
        let mut pending: Vec<Vec<Value<'a>>> = Vec::new();
        let mut bytes = fixed;
        for mut row in rows {
            if self.dialect == Dialect::Postgres {
                // PostgreSQL text cannot hold U+0000.
                for v in &mut row.values {
                    if let Value::Text(t) = v
                        && t.contains('\0')
                    {
                        *t = t.replace('\0', "\u{FFFD}").into();
                    }
                }
            }
            let row_bytes = per_row_sql + row.values.iter().map(Value::wire_size).sum::<usize>();
            if !pending.is_empty() && (pending.len() == max_rows || bytes + row_bytes > max_bytes) {
                emit(upsert, &mut pending, max_rows, out);
                bytes = fixed;
            }
            pending.push(row.values);
            bytes += row_bytes;
        }
        emit(upsert, &mut pending, max_rows, out);
    }
}

/// Row counts of the statements that carry `n` rows (`n <= max_rows`):
/// `[n]` when `n == max_rows`, else the powers of two that sum to `n`,
/// largest first (`201` → `[128, 64, 8, 1]`).
///
/// Why: every distinct row count is a distinct SQL text, which the host's
/// driver must prepare on the server (a round trip whose reply describes
/// every `?`, 10,000 of them for 500 rows of 20 columns) before running
/// it. With these sizes a table has at most `2 + log2(max_rows)` texts, all
/// of which stay in the driver's per-connection statement cache, so after
/// the first batches nothing is prepared again. Measured on the mysql
/// benchmark: prepares were a third of the host's instructions
/// (`docs/benchmarks.md`).
#[must_use]
pub fn statement_sizes(n: usize, max_rows: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    if n >= max_rows {
        return vec![n];
    }
    (0..usize::BITS)
        .rev()
        .map(|bit| 1usize << bit)
        .filter(|size| n & size != 0)
        .collect()
}

/// Pushes the statements for the rows in `pending` (emptying it), sized
/// by [`statement_sizes`].
fn emit<'a>(
    upsert: &Upsert,
    pending: &mut Vec<Vec<Value<'a>>>,
    max_rows: usize,
    out: &mut Vec<Statement<'a>>,
) {
    let mut rows = pending.drain(..);
    for size in statement_sizes(rows.len(), max_rows) {
        let columns = upsert.columns();
        let mut params: Vec<Value<'a>> = Vec::with_capacity(size * columns);
        for row in rows.by_ref().take(size) {
            params.extend(row);
        }
        out.push(Statement {
            sql: upsert.sql(size),
            params,
        });
    }
}

/// The kinds of records, for [`MysqlSink::held`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldKind {
    Job,
    Pod,
    Event,
}

/// The mysql sink over a database connection `D`.
#[derive(Debug)]
pub struct MysqlSink<D: Db> {
    db: D,
    planner: Planner,
    migrations: Vec<String>,
}

impl<D: Db> MysqlSink<D> {
    /// Parse `settings`, open the connection they name with `open`, and
    /// prepare the tables (see [`MysqlSink::with_db`]).
    pub fn init(
        settings: &[(String, String)],
        open: impl FnOnce(&str) -> Result<D, SqlError>,
    ) -> Result<Self, SinkError> {
        let settings = Settings::parse(settings)?;
        let db = open(&settings.connection).map_err(|e| {
            sql_error(
                &format!("opening sql connection `{}`", settings.connection),
                e,
            )
        })?;
        Self::with_db(db, settings)
    }

    /// Use `db` with `settings`: create missing tables (when
    /// `create_tables`), add missing columns and the unique key to existing
    /// ones (e.g. tables KubeDL created), or, with `create_tables` false,
    /// check that they are complete.
    pub fn with_db(mut db: D, settings: Settings) -> Result<Self, SinkError> {
        let planner = Planner::new(settings, db.dialect());
        let mut migrations = Vec::new();
        for table in planner.tables() {
            migrations.extend(prepare_table(&mut db, &planner, table)?);
        }
        Ok(Self {
            db,
            planner,
            migrations,
        })
    }

    /// What `init` changed in existing tables (added columns, merged
    /// duplicates, added keys), one line each; the wasm export prints them
    /// to the host's log.
    #[must_use]
    pub fn migrations(&self) -> &[String] {
        &self.migrations
    }

    /// Upsert `batch` in one transaction; returns the rows affected as the
    /// database counts them.
    pub fn write(&mut self, batch: &[Entry]) -> Result<u64, SinkError> {
        let plan = self.planner.plan(batch);
        if plan.statements.is_empty() {
            return Ok(0);
        }
        let context = format!(
            "writing {} rows to table{} `{}` in {} statements",
            plan.rows,
            if plan.tables.len() > 1 { "s" } else { "" },
            plan.tables.join("`, `"),
            plan.statements.len()
        );
        self.db
            .execute_batch(plan.statements)
            .map_err(|e| sql_error(&context, e))
    }

    /// One page of the uids of `kind` stored as still in the cluster
    /// (`is_in_etcd = 1`), in uid order: at most `limit` uids after
    /// `after` (the cursor: the last uid of the previous page), and the
    /// cursor of the next page (`None` after the last). Empty for a kind
    /// this sink does not write.
    pub fn held(
        &mut self,
        kind: HeldKind,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<String>, Option<String>), SinkError> {
        let s = self.planner.settings();
        let (enabled, table, key) = match kind {
            HeldKind::Job => (s.jobs, s.job_table.as_str(), "job_id"),
            HeldKind::Pod => (s.pods, s.pod_table.as_str(), "pod_id"),
            HeldKind::Event => (s.events, s.event_table.as_str(), "event_id"),
        };
        if !enabled || limit == 0 {
            return Ok((Vec::new(), None));
        }
        let (sql, params) = held_query(self.planner.dialect(), table, key, after, limit);
        let context = format!("reading held uids from table `{table}`");
        let rows = self
            .db
            .query(Statement { sql, params })
            .map_err(|e| sql_error(&context, e))?;
        let uids: Vec<String> = rows
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let next = (uids.len() >= limit as usize)
            .then(|| uids.last().cloned())
            .flatten();
        Ok((uids, next))
    }

    /// The planner (settings, dialect, SQL).
    #[must_use]
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// The connection.
    pub fn db_mut(&mut self) -> &mut D {
        &mut self.db
    }
}

/// The query of one page of held uids: keyset paging on the key column
/// (unique), so each page is one index range scan.
fn held_query(
    dialect: Dialect,
    table: &str,
    key: &str,
    after: Option<&str>,
    limit: u32,
) -> (String, Vec<Value<'static>>) {
    let (t, k) = (schema::quote(dialect, table), schema::quote(dialect, key));
    match after {
        None => (
            format!("SELECT {k} FROM {t} WHERE is_in_etcd = 1 ORDER BY {k} LIMIT {limit}"),
            Vec::new(),
        ),
        Some(after) => (
            format!(
                "SELECT {k} FROM {t} WHERE is_in_etcd = 1 AND {k} > {} ORDER BY {k} LIMIT {limit}",
                dialect.placeholder(1)
            ),
            vec![Value::Text(after.to_owned().into())],
        ),
    }
}

/// The existing columns: name and whether generated.
fn existing_columns(rows: Vec<Vec<Value<'_>>>) -> Vec<(String, bool)> {
    rows.into_iter()
        .filter_map(|r| {
            let mut cells = r.into_iter();
            let name = match cells.next() {
                Some(Value::Text(s)) => s.into_owned(),
                Some(Value::Bytes(b)) => String::from_utf8(b).ok()?,
                _ => return None,
            };
            let generated = cells.next().and_then(|v| v.as_i64()).unwrap_or(0) != 0;
            Some((name, generated))
        })
        .collect()
}

/// How many times the dedupe-then-index step is tried: another writer
/// (KubeDL itself, while both run) may insert a duplicate in between.
const UNIQUE_KEY_ATTEMPTS: usize = 3;

/// Create, check or complete `table`; returns what was changed, one line
/// per change, for the log.
fn prepare_table<D: Db>(
    db: &mut D,
    planner: &Planner,
    table: &Table,
) -> Result<Vec<String>, SinkError> {
    let dialect = planner.dialect();
    let create = planner.settings().create_tables;
    let t = table.name.as_str();
    let mut log = Vec::new();
    if create {
        for st in schema::create_statements(dialect, table) {
            db.execute(st)
                .map_err(|e| sql_error(&format!("creating table `{t}`"), e))?;
        }
    }
    let existing = existing_columns(
        db.query(schema::columns_query(dialect, table))
            .map_err(|e| sql_error(&format!("reading the columns of table `{t}`"), e))?,
    );
    if existing.is_empty() {
        return Err(SinkError::Fatal(format!(
            "mysql sink: table `{t}` does not exist{}",
            if create {
                " after CREATE TABLE"
            } else {
                " and create_tables is false"
            }
        )));
    }
    let find = |name: &str| {
        existing
            .iter()
            .find(|(e, _)| e.eq_ignore_ascii_case(name))
            .map(|(_, generated)| *generated)
    };
    let missing: Vec<_> = table
        .columns
        .iter()
        .filter(|c| find(c.name).is_none())
        .collect();
    let missing_generated: Vec<_> = table
        .generated
        .iter()
        .filter(|g| find(g.name) != Some(true))
        .collect();
    let complete = missing.is_empty() && missing_generated.is_empty();
    if !create && !complete {
        let mut list: Vec<String> = missing.iter().map(|c| c.name.to_owned()).collect();
        list.extend(
            missing_generated
                .iter()
                .map(|g| format!("{} (generated from {})", g.name, g.source)),
        );
        return Err(SinkError::Fatal(format!(
            "mysql sink: table `{t}` lacks column(s) {} and create_tables is false",
            list.join(", ")
        )));
    }
    let mut version_num_added = false;
    for c in &missing {
        db.execute(schema::add_column_statement(dialect, table, c))
            .map_err(|e| sql_error(&format!("adding column `{}` to table `{t}`", c.name), e))?;
        version_num_added |= c.name == schema::VERSION_NUM;
        log.push(format!(
            "table `{t}`: added column `{}` {}",
            c.name, c.mysql
        ));
    }
    for g in missing_generated {
        if find(g.name) == Some(false) {
            // Written by an earlier kubesink: keep its values in the source.
            let copied = db
                .execute(schema::copy_into_source_statement(dialect, table, g))
                .map_err(|e| {
                    sql_error(
                        &format!("copying `{}` into `{}` in table `{t}`", g.name, g.source),
                        e,
                    )
                })?;
            db.execute(schema::drop_column_statement(dialect, table, g.name))
                .map_err(|e| {
                    sql_error(&format!("dropping column `{}` of table `{t}`", g.name), e)
                })?;
            log.push(format!(
                "table `{t}`: copied stored column `{}` into `{}` where that was NULL ({copied} rows), dropped it",
                g.name, g.source
            ));
        }
        db.execute(schema::add_generated_statement(dialect, table, g))
            .map_err(|e| {
                sql_error(
                    &format!("adding generated column `{}` to table `{t}`", g.name),
                    e,
                )
            })?;
        log.push(format!(
            "table `{t}`: added column `{}` generated from `{}`",
            g.name, g.source
        ));
    }
    let has_unique = |db: &mut D| -> Result<bool, SinkError> {
        Ok(!db
            .query(schema::unique_key_query(dialect, table))
            .map_err(|e| sql_error(&format!("reading the indexes of table `{t}`"), e))?
            .is_empty())
    };
    if has_unique(db)? {
        if version_num_added {
            let n = db
                .execute(schema::fill_version_num_statement(dialect, table))
                .map_err(|e| sql_error(&format!("filling `version_num` of table `{t}`"), e))?;
            log.push(format!(
                "table `{t}`: set `version_num` from `version` on {n} rows"
            ));
        }
        return Ok(log);
    }
    let key = table.key_name();
    if !create {
        return Err(SinkError::Fatal(format!(
            "mysql sink: table `{t}` has no unique key on `{key}` and create_tables is false"
        )));
    }
    let mut last_error = None;
    for attempt in 1..=UNIQUE_KEY_ATTEMPTS {
        let dup = db
            .query(schema::duplicates_query(dialect, table))
            .map_err(|e| {
                sql_error(
                    &format!("counting duplicate `{key}` rows of table `{t}`"),
                    e,
                )
            })?;
        let cell = |i: usize| {
            dup.first()
                .and_then(|r| r.get(i))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let (rows, keys) = (cell(0), cell(1));
        // One transaction: version numbers for the rows KubeDL wrote, then
        // every row but the newest of each key removed.
        db.execute_batch(vec![
            schema::fill_version_num_statement(dialect, table),
            schema::delete_duplicates_statement(dialect, table),
        ])
        .map_err(|e| sql_error(&format!("merging duplicate `{key}` rows of table `{t}`"), e))?;
        if rows > 0 {
            log.push(format!(
                "table `{t}`: merged {rows} rows sharing {keys} `{key}` values into one row each (the newest version kept, {} rows removed)",
                rows - keys
            ));
        }
        match db.execute(schema::add_unique_key_statement(dialect, table)) {
            Ok(_) => {
                log.push(format!("table `{t}`: added a unique key on `{key}`"));
                return Ok(log);
            }
            Err(e) if !e.is_retryable() && attempt < UNIQUE_KEY_ATTEMPTS && !has_unique(db)? => {
                // A duplicate inserted since the merge: merge again.
                last_error = Some(e);
            }
            Err(e) => {
                return Err(sql_error(
                    &format!("adding a unique key on `{key}` to table `{t}`"),
                    e,
                ));
            }
        }
    }
    Err(sql_error(
        &format!(
            "adding a unique key on `{key}` to table `{t}` after {UNIQUE_KEY_ATTEMPTS} merges"
        ),
        last_error.unwrap_or_else(|| SqlError::Rejected("duplicates kept appearing".into())),
    ))
}

#[cfg(test)]
mod tests;
