//! The tables: their columns (KubeDL's `job_info` and `replica_info`, and
//! kubesink's `event_info`), the DDL for each dialect, the statements that
//! check and complete an existing table, and the text of the idempotent
//! multi-row upsert. Pure string building; nothing here talks to a database.
//!
//! This module holds the column layouts and [`Table`]; [`ddl`] creates
//! tables, [`migrate`] checks and completes existing ones, [`upsert`]
//! builds the write.

use crate::db::Dialect;
use crate::settings::Ident;

mod ddl;
mod migrate;
mod upsert;

pub use ddl::{create_statements, generated_definition};
pub use migrate::{
    add_column_statement, add_generated_statement, add_unique_key_statement, columns_query,
    copy_into_source_statement, delete_duplicates_statement, drop_column_statement,
    duplicates_query, fill_version_num_statement, unique_key_query,
};
pub use upsert::{Upsert, upsert};

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

impl Column {
    /// The column's type in `dialect`. PostgreSQL has no unsigned or
    /// one-byte integers and no `datetime`: `tinyint` is `smallint`,
    /// unsigned integers are `bigint`, `datetime` is `timestamp` (without
    /// time zone, holding UTC like the other databases); `varchar(n)`
    /// (characters) and `text` are the same.
    #[must_use]
    pub fn ty(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Mysql => self.mysql,
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => postgres_type(self.mysql),
        }
    }
}

/// The PostgreSQL type for a MySQL column type of these tables.
#[must_use]
pub fn postgres_type(mysql: &'static str) -> &'static str {
    if mysql.starts_with("tinyint") {
        "smallint"
    } else if mysql.ends_with("unsigned") {
        "bigint"
    } else if mysql == DATETIME {
        "timestamp"
    } else {
        mysql
    }
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
        Dialect::Sqlite | Dialect::Postgres => format!("\"{ident}\""),
    }
}

#[cfg(test)]
mod tests;
