//! The tables: their columns (KubeDL's `job_info` and `replica_info`, and
//! kubesink's `event_info`), the DDL for each dialect, the statements that
//! check and complete an existing table, and the text of the idempotent
//! multi-row upsert. Pure string building; nothing here talks to a database.

use crate::db::{Dialect, Statement, Value};
use crate::settings::Ident;

/// Which record kind a table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Jobs (`job_info`).
    Job,
    /// Pods (`replica_info`).
    Pod,
    /// Events (`event_info`).
    Event,
}

/// One column (besides the `id` primary key, common to all tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// Type on MySQL/MariaDB (as `information_schema.columns.column_type`
    /// shows it).
    pub mysql: &'static str,
    /// Declared type on SQLite (as `pragma table_info` shows it).
    pub sqlite: &'static str,
    /// Longest text in characters (varchar columns); longer text is cut at
    /// a character boundary.
    pub max_chars: Option<usize>,
    /// Longest text in bytes of UTF-8 (`text` columns hold 65,535 bytes on
    /// MySQL/MariaDB); longer text is cut at a character boundary. The same
    /// cut applies on SQLite, so both databases hold the same rows.
    pub max_bytes: Option<usize>,
}

/// What a MySQL `text` column holds, in bytes.
pub const TEXT_MAX_BYTES: usize = 65_535;

const fn col(name: &'static str, mysql: &'static str, sqlite: &'static str) -> Column {
    Column {
        name,
        mysql,
        sqlite,
        max_chars: None,
        max_bytes: None,
    }
}

const fn varchar(name: &'static str, mysql: &'static str, n: usize) -> Column {
    Column {
        name,
        mysql,
        sqlite: mysql,
        max_chars: Some(n),
        max_bytes: None,
    }
}

/// A `text` column: at most [`TEXT_MAX_BYTES`] bytes.
const fn text_col(name: &'static str) -> Column {
    Column {
        name,
        mysql: TEXT,
        sqlite: TEXT,
        max_chars: None,
        max_bytes: Some(TEXT_MAX_BYTES),
    }
}

const TEXT: &str = "text";
const DATETIME: &str = "datetime";
const TINYINT: &str = "tinyint(4)";

/// Name of the column holding `resource-version-num`.
pub const VERSION_NUM: &str = "version_num";
/// Name of the column saying whether the object still exists.
pub const IS_IN_ETCD: &str = "is_in_etcd";
/// Statuses after which a removed job or pod keeps its status (otherwise it
/// becomes [`STOPPED`]).
pub const FINISHED_STATUSES: [&str; 2] = ["Succeeded", "Failed"];
/// Status of a job or pod removed before it finished.
pub const STOPPED: &str = "Stopped";

/// `job_info`: KubeDL's columns (those of its `dmo.Job` gorm model), then
/// `version_num`. The seed document's `gmt_finished` is a generated column
/// over `gmt_job_finished` ([`JOB_GENERATED`]), not written.
pub const JOB_COLUMNS: &[Column] = &[
    varchar("name", "varchar(128)", 128),
    varchar("namespace", "varchar(128)", 128),
    varchar("job_id", "varchar(64)", 64),
    varchar("version", "varchar(32)", 32),
    varchar("status", "varchar(32)", 32),
    varchar("kind", "varchar(32)", 32),
    text_col("resources"),
    varchar("deploy_region", "varchar(64)", 64),
    varchar("tenant", "varchar(255)", 255),
    varchar("owner", "varchar(255)", 255),
    col("deleted", TINYINT, TINYINT),
    col(IS_IN_ETCD, TINYINT, TINYINT),
    text_col("remark"),
    col("gmt_created", DATETIME, DATETIME),
    col("gmt_modified", DATETIME, DATETIME),
    col("gmt_job_running", DATETIME, DATETIME),
    col(JOB_FINISHED, DATETIME, DATETIME),
    col(VERSION_NUM, "bigint(20) unsigned", "bigint unsigned"),
];

/// KubeDL's finish time column of `job_info` (`dmo.Job.GmtJobFinished`).
pub const JOB_FINISHED: &str = "gmt_job_finished";
/// The seed document's name for a job's finish time.
pub const SEED_FINISHED: &str = "gmt_finished";

/// A column the database computes from another one: never written, always
/// equal to its source (also when KubeDL's console writes the source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generated {
    /// Column name.
    pub name: &'static str,
    /// Type on both dialects.
    pub ty: &'static str,
    /// The column it mirrors.
    pub source: &'static str,
}

/// `job_info.gmt_finished` (the seed document's name) mirrors KubeDL's
/// `gmt_job_finished`.
pub const JOB_GENERATED: &[Generated] = &[Generated {
    name: SEED_FINISHED,
    ty: DATETIME,
    source: JOB_FINISHED,
}];

/// `replica_info`: KubeDL's columns, then `version_num`.
pub const POD_COLUMNS: &[Column] = &[
    varchar("name", "varchar(128)", 128),
    varchar("namespace", "varchar(128)", 128),
    varchar("pod_id", "varchar(64)", 64),
    varchar("version", "varchar(32)", 32),
    varchar("status", "varchar(32)", 32),
    varchar("image", "varchar(255)", 255),
    varchar("job_id", "varchar(64)", 64),
    varchar("replica_type", "varchar(32)", 32),
    varchar("resources", "varchar(1024)", 1024),
    varchar("host_ip", "varchar(64)", 64),
    varchar("pod_ip", "varchar(64)", 64),
    varchar("deploy_region", "varchar(64)", 64),
    col("deleted", TINYINT, TINYINT),
    col(IS_IN_ETCD, TINYINT, TINYINT),
    text_col("remark"),
    col("gmt_created", DATETIME, DATETIME),
    col("gmt_modified", DATETIME, DATETIME),
    col("gmt_started", DATETIME, DATETIME),
    col("gmt_finished", DATETIME, DATETIME),
    col(VERSION_NUM, "bigint(20) unsigned", "bigint unsigned"),
];

/// `event_info`: kubesink's design, one row per event uid.
pub const EVENT_COLUMNS: &[Column] = &[
    varchar("event_id", "varchar(64)", 64),
    varchar("name", "varchar(255)", 255),
    varchar("namespace", "varchar(128)", 128),
    varchar("version", "varchar(32)", 32),
    varchar("obj_api_version", "varchar(128)", 128),
    varchar("obj_kind", "varchar(64)", 64),
    varchar("obj_namespace", "varchar(128)", 128),
    varchar("obj_name", "varchar(255)", 255),
    varchar("obj_uid", "varchar(64)", 64),
    varchar("type", "varchar(32)", 32),
    varchar("reason", "varchar(128)", 128),
    text_col("message"),
    varchar("source", "varchar(255)", 255),
    col("count", "int(10) unsigned", "int unsigned"),
    col("first_timestamp", DATETIME, DATETIME),
    col("last_timestamp", DATETIME, DATETIME),
    varchar("deploy_region", "varchar(64)", 64),
    col(IS_IN_ETCD, TINYINT, TINYINT),
    col("gmt_created", DATETIME, DATETIME),
    col("gmt_modified", DATETIME, DATETIME),
    col(VERSION_NUM, "bigint(20) unsigned", "bigint unsigned"),
];

/// A table as configured: its kind, name and column layout, with the
/// positions of the columns the upsert treats specially.
#[derive(Debug, Clone)]
pub struct Table {
    /// Which records it holds.
    pub kind: Kind,
    /// Its (checked) name.
    pub name: Ident,
    /// Columns in insert order (without `id`).
    pub columns: &'static [Column],
    /// Position of the unique key column (the object's uid).
    pub key: usize,
    /// Position of `status` (jobs and pods).
    pub status: Option<usize>,
    /// Position of the finish time (`gmt_job_finished` of jobs,
    /// `gmt_finished` of pods).
    pub finished: Option<usize>,
    /// Position of `deleted` (jobs and pods): set on insert only, so a
    /// deletion recorded by KubeDL's console stays.
    pub deleted: Option<usize>,
    /// Generated (read-only) columns.
    pub generated: &'static [Generated],
    /// Position of `version_num`.
    pub version: usize,
    /// Position of `is_in_etcd`.
    pub in_etcd: usize,
    /// Columns with a secondary (non-unique) index.
    pub indexed: &'static [&'static str],
}

fn position(columns: &[Column], name: &str) -> Option<usize> {
    columns.iter().position(|c| c.name == name)
}

impl Table {
    /// The table for `kind` under `name`.
    #[must_use]
    pub fn new(kind: Kind, name: Ident) -> Self {
        let (columns, key, indexed, generated): (_, _, &'static [&'static str], _) = match kind {
            Kind::Job => (JOB_COLUMNS, "job_id", &[], JOB_GENERATED),
            Kind::Pod => (POD_COLUMNS, "pod_id", &["job_id"], &[][..]),
            Kind::Event => (EVENT_COLUMNS, "event_id", &["obj_uid"], &[][..]),
        };
        // The column lists above are constants; these positions exist.
        let must = |n: &str| position(columns, n).unwrap_or(usize::MAX);
        Self {
            kind,
            name,
            columns,
            key: must(key),
            status: position(columns, "status"),
            finished: position(columns, JOB_FINISHED).or(position(columns, SEED_FINISHED)),
            deleted: position(columns, "deleted"),
            generated,
            version: must(VERSION_NUM),
            in_etcd: must(IS_IN_ETCD),
            indexed,
        }
    }

    /// The key column's name.
    #[must_use]
    pub fn key_name(&self) -> &'static str {
        self.columns[self.key].name
    }
}

/// Quote an identifier for `dialect`. Only checked identifiers and the
/// constant column names reach here.
#[must_use]
pub fn quote(dialect: Dialect, ident: &str) -> String {
    match dialect {
        Dialect::Mysql => format!("`{ident}`"),
        Dialect::Sqlite => format!("\"{ident}\""),
    }
}

/// `CREATE TABLE IF NOT EXISTS` (and, on SQLite, the secondary indexes).
#[must_use]
pub fn create_statements(dialect: Dialect, table: &Table) -> Vec<Statement> {
    let q = |s: &str| quote(dialect, s);
    let t = q(table.name.as_str());
    let key = table.key_name();
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {t} (\n");
    match dialect {
        Dialect::Mysql => sql.push_str("  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,\n"),
        _ => sql.push_str("  \"id\" INTEGER PRIMARY KEY AUTOINCREMENT,\n"),
    }
    for c in table.columns {
        let ty = if dialect == Dialect::Mysql {
            c.mysql
        } else {
            c.sqlite
        };
        let constraint = if c.name == key {
            " NOT NULL"
        } else if c.name == VERSION_NUM {
            " NOT NULL DEFAULT 0"
        } else if dialect == Dialect::Mysql {
            " DEFAULT NULL"
        } else {
            ""
        };
        // Always followed by the key clauses below.
        sql.push_str(&format!("  {} {ty}{constraint},\n", q(c.name)));
    }
    for g in table.generated {
        sql.push_str(&format!("  {},\n", generated_definition(dialect, g)));
    }
    let mut out = Vec::new();
    match dialect {
        Dialect::Mysql => {
            sql.push_str("  PRIMARY KEY (`id`),\n");
            sql.push_str(&format!("  UNIQUE KEY `uk_{key}` (`{key}`)"));
            for ix in table.indexed {
                sql.push_str(&format!(",\n  KEY `idx_{ix}` (`{ix}`)"));
            }
            sql.push_str("\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4");
            out.push(Statement::plain(sql));
        }
        _ => {
            sql.push_str(&format!("  UNIQUE ({})\n)", q(key)));
            out.push(Statement::plain(sql));
            for ix in table.indexed {
                out.push(Statement::plain(format!(
                    "CREATE INDEX IF NOT EXISTS {} ON {t} ({})",
                    q(&format!("idx_{}_{ix}", table.name)),
                    q(ix)
                )));
            }
        }
    }
    out
}

/// `name type GENERATED ALWAYS AS (source) VIRTUAL` (MySQL 5.7+, MariaDB
/// 10.2+, SQLite 3.31+).
#[must_use]
pub fn generated_definition(dialect: Dialect, g: &Generated) -> String {
    format!(
        "{} {} GENERATED ALWAYS AS ({}) VIRTUAL",
        quote(dialect, g.name),
        g.ty,
        quote(dialect, g.source)
    )
}

/// A query returning the table's existing columns, each as its name and
/// whether it is generated (1) or stored (0); no rows when the table does
/// not exist. (SQLite's `table_info` hides generated columns; `table_xinfo`
/// shows them, `hidden` 2 or 3.)
#[must_use]
pub fn columns_query(dialect: Dialect, table: &Table) -> Statement {
    let sql = match dialect {
        Dialect::Mysql => {
            "SELECT column_name, CASE WHEN extra LIKE '%GENERATED%' THEN 1 ELSE 0 END \
             FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ?"
        }
        _ => "SELECT name, CASE WHEN hidden IN (2, 3) THEN 1 ELSE 0 END FROM pragma_table_xinfo(?)",
    };
    Statement {
        sql: sql.to_owned(),
        params: vec![Value::Text(table.name.to_string())],
    }
}

/// A query returning a row when the table has a unique index on exactly its
/// key column (what the upsert needs).
#[must_use]
pub fn unique_key_query(dialect: Dialect, table: &Table) -> Statement {
    let sql = match dialect {
        Dialect::Mysql => {
            "SELECT index_name FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = ? AND non_unique = 0 \
             GROUP BY index_name HAVING COUNT(*) = 1 AND MAX(column_name) = ?"
        }
        _ => {
            "SELECT il.name FROM pragma_index_list(?) AS il WHERE il.\"unique\" = 1 \
             AND (SELECT COUNT(*) FROM pragma_index_info(il.name)) = 1 \
             AND (SELECT ii.name FROM pragma_index_info(il.name) AS ii) = ?"
        }
    };
    Statement {
        sql: sql.to_owned(),
        params: vec![
            Value::Text(table.name.to_string()),
            Value::Text(table.key_name().to_owned()),
        ],
    }
}

/// `ALTER TABLE ... ADD COLUMN` for a column an existing table lacks.
#[must_use]
pub fn add_column_statement(dialect: Dialect, table: &Table, column: &Column) -> Statement {
    let ty = if dialect == Dialect::Mysql {
        column.mysql
    } else {
        column.sqlite
    };
    let default = if column.name == VERSION_NUM {
        " NOT NULL DEFAULT 0"
    } else {
        ""
    };
    Statement::plain(format!(
        "ALTER TABLE {} ADD COLUMN {} {ty}{default}",
        quote(dialect, table.name.as_str()),
        quote(dialect, column.name)
    ))
}

/// `ALTER TABLE ... ADD COLUMN` for a generated column.
#[must_use]
pub fn add_generated_statement(dialect: Dialect, table: &Table, g: &Generated) -> Statement {
    Statement::plain(format!(
        "ALTER TABLE {} ADD COLUMN {}",
        quote(dialect, table.name.as_str()),
        generated_definition(dialect, g)
    ))
}

/// Copies a stored column that is to become generated into its source
/// where the source has no value (a table on which an earlier kubesink
/// wrote `gmt_finished` and left `gmt_job_finished` NULL).
#[must_use]
pub fn copy_into_source_statement(dialect: Dialect, table: &Table, g: &Generated) -> Statement {
    let (t, n, s) = (
        quote(dialect, table.name.as_str()),
        quote(dialect, g.name),
        quote(dialect, g.source),
    );
    Statement::plain(format!(
        "UPDATE {t} SET {s} = {n} WHERE {s} IS NULL AND {n} IS NOT NULL"
    ))
}

/// `ALTER TABLE ... DROP COLUMN` (SQLite 3.35+).
#[must_use]
pub fn drop_column_statement(dialect: Dialect, table: &Table, column: &str) -> Statement {
    Statement::plain(format!(
        "ALTER TABLE {} DROP COLUMN {}",
        quote(dialect, table.name.as_str()),
        quote(dialect, column)
    ))
}

/// Sets `version_num` from `version` (KubeDL's resourceVersion string)
/// where it is still 0 and `version` is all digits: rows KubeDL wrote
/// before `version_num` existed then compare like kubesink's own.
#[must_use]
pub fn fill_version_num_statement(dialect: Dialect, table: &Table) -> Statement {
    let t = quote(dialect, table.name.as_str());
    let digits = match dialect {
        Dialect::Mysql => "`version` REGEXP '^[0-9]{1,19}$'",
        _ => "\"version\" <> '' AND \"version\" NOT GLOB '*[^0-9]*' AND length(\"version\") <= 19",
    };
    let cast = match dialect {
        Dialect::Mysql => "CAST(`version` AS UNSIGNED)",
        _ => "CAST(\"version\" AS INTEGER)",
    };
    let v = quote(dialect, VERSION_NUM);
    Statement::plain(format!(
        "UPDATE {t} SET {v} = {cast} WHERE COALESCE({v}, 0) = 0 AND {digits}"
    ))
}

/// A query returning one row: how many rows share their key with another
/// row, and how many keys they share.
#[must_use]
pub fn duplicates_query(dialect: Dialect, table: &Table) -> Statement {
    let t = quote(dialect, table.name.as_str());
    let k = quote(dialect, table.key_name());
    Statement::plain(format!(
        "SELECT COALESCE(SUM(n), 0), COUNT(*) FROM \
         (SELECT COUNT(*) AS n FROM {t} WHERE {k} IS NOT NULL GROUP BY {k} HAVING COUNT(*) > 1) AS d"
    ))
}

/// Deletes every row that has a newer row with the same key, newer meaning
/// a greater `version_num`, or an equal one and a greater `id` (the later
/// insert): one row per key is left, the newest version.
#[must_use]
pub fn delete_duplicates_statement(dialect: Dialect, table: &Table) -> Statement {
    let t = quote(dialect, table.name.as_str());
    let k = quote(dialect, table.key_name());
    let v = quote(dialect, VERSION_NUM);
    let id = quote(dialect, "id");
    // MySQL refuses a subquery on the table being deleted from unless it is
    // materialized first (the derived table `x`).
    Statement::plain(format!(
        "DELETE FROM {t} WHERE {id} IN (SELECT x.{id} FROM (\
         SELECT o.{id} FROM {t} AS o JOIN {t} AS n ON n.{k} = o.{k} \
         AND (COALESCE(n.{v}, 0) > COALESCE(o.{v}, 0) \
         OR (COALESCE(n.{v}, 0) = COALESCE(o.{v}, 0) AND n.{id} > o.{id}))) AS x)"
    ))
}

/// `CREATE UNIQUE INDEX` on the key column of an existing table.
#[must_use]
pub fn add_unique_key_statement(dialect: Dialect, table: &Table) -> Statement {
    let key = table.key_name();
    let index = match dialect {
        Dialect::Mysql => format!("uk_{key}"),
        _ => format!("uk_{}_{key}", table.name),
    };
    Statement::plain(format!(
        "CREATE UNIQUE INDEX {} ON {} ({})",
        quote(dialect, &index),
        quote(dialect, table.name.as_str()),
        quote(dialect, key)
    ))
}

/// The parts of a table's multi-row upsert: `head` + `rows` copies of the
/// row placeholder joined by `,` + `tail`.
#[derive(Debug, Clone)]
pub struct Upsert {
    /// `INSERT INTO t (cols) VALUES `.
    pub head: String,
    /// `(?, ?, ...)` for one row.
    pub row: String,
    /// The conflict clause.
    pub tail: String,
}

impl Upsert {
    /// The statement text for `rows` rows.
    #[must_use]
    pub fn sql(&self, rows: usize) -> String {
        let mut sql =
            String::with_capacity(self.head.len() + rows * (self.row.len() + 1) + self.tail.len());
        sql.push_str(&self.head);
        for i in 0..rows {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&self.row);
        }
        sql.push_str(&self.tail);
        sql
    }
}

/// Build the upsert for `table` in `dialect`.
///
/// Let `T` ("take the new row") be: the stored row is not removed, or the
/// new one is a removal; and the new `version_num` is at least the stored
/// one. Then: every data column takes the new value when `T`; `deleted`
/// is 1 once either side is 1 (a job's removal, as KubeDL's DeleteJob,
/// or KubeDL's console); the finish time (`gmt_job_finished` / `gmt_finished`) keeps a
/// removed row's finish time, else follows `T`, else
/// (a stale removal of an unfinished row) takes the removal's; `status`
/// follows `T`, else becomes `Stopped` for a stale removal of an unfinished
/// row; `version_num` follows `T`; `is_in_etcd` is 0 once either side is 0,
/// so a removal is final. MySQL runs `ON DUPLICATE KEY UPDATE` assignments
/// left to right, each seeing the columns already assigned, so the columns
/// the conditions read (`gmt_finished`, `status`, `version_num`,
/// `is_in_etcd`) are assigned last, in that order. [`crate::rows::merge`]
/// is the same rule in Rust.
#[must_use]
pub fn upsert(dialect: Dialect, table: &Table) -> Upsert {
    let q = |s: &str| quote(dialect, s);
    let new = |c: &str| match dialect {
        Dialect::Mysql => format!("VALUES({})", q(c)),
        _ => format!("excluded.{}", q(c)),
    };
    let old = |c: &str| q(c);
    let names: Vec<String> = table.columns.iter().map(|c| q(c.name)).collect();
    let head = format!(
        "INSERT INTO {} ({}) VALUES ",
        q(table.name.as_str()),
        names.join(", ")
    );
    let row = format!("({})", vec!["?"; table.columns.len()].join(", "));

    let take = format!(
        "(COALESCE({e}, 1) <> 0 OR {ne} = 0) AND {nv} >= COALESCE({v}, 0)",
        e = old(IS_IN_ETCD),
        ne = new(IS_IN_ETCD),
        nv = new(VERSION_NUM),
        v = old(VERSION_NUM),
    );
    let finished_list = FINISHED_STATUSES
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let unfinished = format!("COALESCE({}, '') NOT IN ({finished_list})", old("status"));
    let stale_removal = format!("{} = 0 AND {unfinished}", new(IS_IN_ETCD));

    let mut sets = Vec::new();
    let special = [Some(table.key), table.status, table.finished, table.deleted];
    for (i, c) in table.columns.iter().enumerate() {
        if special.contains(&Some(i)) || i == table.version || i == table.in_etcd {
            continue;
        }
        sets.push(format!(
            "{} = CASE WHEN {take} THEN {} ELSE {} END",
            q(c.name),
            new(c.name),
            old(c.name)
        ));
    }
    if let Some(d) = table.deleted {
        // Once 1, stays 1: set by a job's removal or by KubeDL's console.
        let d = table.columns[d].name;
        sets.push(format!(
            "{qd} = CASE WHEN COALESCE({qd}, 0) <> 0 OR {nd} <> 0 THEN 1 ELSE 0 END",
            qd = q(d),
            nd = new(d)
        ));
    }
    if let Some(f) = table.finished {
        let f = table.columns[f].name;
        sets.push(format!(
            "{qf} = CASE WHEN COALESCE({e}, 1) = 0 AND {of} IS NOT NULL THEN {of} \
             WHEN {take} THEN {nf} \
             WHEN {stale_removal} AND {of} IS NULL THEN {nf} ELSE {of} END",
            qf = q(f),
            of = old(f),
            nf = new(f),
            e = old(IS_IN_ETCD),
        ));
    }
    if let Some(s) = table.status {
        let s = table.columns[s].name;
        sets.push(format!(
            "{qs} = CASE WHEN {take} THEN {ns} WHEN {stale_removal} THEN '{STOPPED}' ELSE {os} END",
            qs = q(s),
            ns = new(s),
            os = old(s),
        ));
    }
    sets.push(format!(
        "{v} = CASE WHEN {take} THEN {nv} ELSE {v} END",
        v = q(VERSION_NUM),
        nv = new(VERSION_NUM),
    ));
    sets.push(format!(
        "{e} = CASE WHEN COALESCE({e}, 1) = 0 OR {ne} = 0 THEN 0 ELSE 1 END",
        e = q(IS_IN_ETCD),
        ne = new(IS_IN_ETCD),
    ));
    let tail = match dialect {
        Dialect::Mysql => format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", ")),
        _ => format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            q(table.key_name()),
            sets.join(", ")
        ),
    };
    Upsert { head, row, tail }
}

#[cfg(test)]
mod tests;
