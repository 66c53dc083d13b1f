//! # kubesink mysql sink
//!
//! Persists kubesink's records into KubeDL's metadata tables (`job_info`,
//! `replica_info`) and an events table (`event_info`), on MySQL/MariaDB or
//! SQLite, through the host's `kubesink:sink/sql` capability. Built as a
//! WASI 0.2 component:
//!
//! ```text
//! cargo build --target wasm32-wasip2 --profile guest -p kubesink-sink-mysql
//! ```
//!
//! The logic ([`MysqlSink`] over a [`Db`], [`Planner`] for the SQL alone)
//! has no dependency on the bindings and also compiles natively; the wasm
//! export (module `component`, wasm only) is a thin adapter.
//!
//! ## Settings
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `connection` | `default` | name of the sql connection to open (granted by the host config) |
//! | `jobs` | `true` | write jobs |
//! | `pods` | `true` | write pods |
//! | `events` | `true` | write events |
//! | `job_table` | `job_info` | table for jobs |
//! | `pod_table` | `replica_info` | table for pods |
//! | `event_table` | `event_info` | table for events |
//! | `create_tables` | `true` | create missing tables, and add missing columns and the unique key to existing ones; when `false`, only check them |
//! | `max_rows_per_statement` | `500` | rows per multi-row upsert (1..=10000) |
//! | `max_statement_bytes` | `1048576` | approximate bytes (SQL plus parameters) per upsert (4096..=16777216) |
//!
//! Booleans accept `true/false/1/0/yes/no/on/off`; table names are ASCII
//! letters, digits and `_`. An unknown or repeated key is a fatal error
//! naming it.
//!
//! ## Tables
//!
//! `job_info` and `replica_info` have every column of KubeDL's gorm models
//! (`pkg/storage/dmo` of `github.com/alibaba/kubedl` v0.5.0), with the same
//! names and types, so KubeDL's own reader and its console work on them
//! (`tests/tests/e2e/kubedl_compat.rs` runs KubeDL's code against them),
//! an auto-increment `id` primary key, plus:
//! - a `UNIQUE` key on `job_id` / `pod_id`, which makes upserts idempotent;
//! - `version_num bigint unsigned`: `resourceVersion` as a number, compared
//!   to ignore stale writes (`version` keeps the string);
//! - `job_info.gmt_finished`, the seed document's name for a job's finish
//!   time, as a virtual generated column over KubeDL's `gmt_job_finished`:
//!   never written, always equal, also when KubeDL's console stops a job
//!   (a second stored column would drift from it).
//!
//! On an existing table (KubeDL's, or an earlier kubesink's) `init` adds
//! what is missing, in this order, and logs each step (`mysql sink:
//! migrated: ...` in the host's log): missing columns (`version_num`, then
//! filled from `version`); a stored `gmt_finished` an earlier kubesink
//! wrote is copied into `gmt_job_finished` where that is NULL, dropped and
//! re-added as generated; then, without a unique key, the duplicate rows
//! KubeDL's find-then-create race leaves are merged (per key the newest
//! version, then the latest insert, is kept; one transaction) and the key
//! is added (merged again if a concurrent writer inserted a duplicate in
//! between, up to 3 times).

//! `event_info` (kubesink's design), one row per event uid:
//!
//! | column | type | from |
//! | --- | --- | --- |
//! | `id` | bigint(20) unsigned auto-increment | |
//! | `event_id` | varchar(64), unique | `metadata.uid` |
//! | `name` | varchar(255) | `metadata.name` |
//! | `namespace` | varchar(128) | `metadata.namespace` |
//! | `version` | varchar(32) | `metadata.resourceVersion` |
//! | `obj_api_version`, `obj_kind`, `obj_namespace`, `obj_name`, `obj_uid` | varchar(128), (64), (128), (255), (64) | the involved object; `obj_uid` indexed |
//! | `type` | varchar(32) | `Normal` / `Warning` |
//! | `reason` | varchar(128) | reason |
//! | `message` | text | message |
//! | `source` | varchar(255) | `component/host` |
//! | `count` | int(10) unsigned | occurrences; grows in place |
//! | `first_timestamp`, `last_timestamp` | datetime | first / last seen |
//! | `deploy_region` | varchar(64) | region |
//! | `is_in_etcd` | tinyint(4) | 0 once the event expired from the cluster |
//! | `gmt_created` | datetime | `metadata.creationTimestamp` |
//! | `gmt_modified` | datetime | last seen |
//! | `version_num` | bigint(20) unsigned | `resourceVersion` as a number |
//!
//! On SQLite the same columns are declared with the same type names
//! (`bigint unsigned` / `int unsigned` without a display width; `id` is
//! `INTEGER PRIMARY KEY AUTOINCREMENT`).
//!
//! Columns: `gmt_created` = creation, `gmt_modified` = the record's
//! `modified` (events: last seen), `gmt_job_running` = running-at,
//! `gmt_started` = started-at, `gmt_job_finished` (jobs) / `gmt_finished`
//! (pods) = finished-at, `deploy_region` = region. As KubeDL writes them:
//! `remark`, `deploy_region`, `host_ip` and `pod_ip` are NULL when empty
//! (`tenant` and `owner` are `''`); `deleted` is 0, and 1 once a job left
//! the cluster (KubeDL's job controller calls `DeleteJob`) or KubeDL's
//! console deleted it (kept by later writes). Text longer than its varchar is cut at a
//! character boundary (e.g. pod `resources`, varchar(1024)).
//!
//! ## Writes
//!
//! Each batch is one `execute-batch` transaction of multi-row upserts
//! grouped by table (MySQL: `INSERT ... ON DUPLICATE KEY UPDATE` with
//! `VALUES()`; SQLite: `INSERT ... ON CONFLICT (key) DO UPDATE`) of
//! `max_rows_per_statement` rows, the rest in power-of-two row counts, so
//! that the host's driver prepares each statement text once and then finds
//! it in its statement cache ([`sink::statement_sizes`]). Entries
//! for the same uid in a batch collapse first (a statement may not touch a
//! row twice). The rule, in SQL and in the collapse alike: a record whose
//! `version_num` is lower than the stored one is ignored; `applied` sets
//! `is_in_etcd = 1`, `removed` stores the last state with `is_in_etcd = 0`,
//! and a job or pod removed before `Succeeded`/`Failed` becomes `Stopped`
//! with its finish time = the removal time (when it had none). A removal is
//! final: no later `applied` (of any version) brings a removed row back.
//!
//! Errors: the sql capability's `unavailable` is `retryable`; `denied`,
//! `rejected` and `too-large` are `fatal`; messages name the table.

pub mod db;
pub mod model;
pub mod rows;
pub mod schema;
pub mod settings;
pub mod sink;

// wit-bindgen's generated export glue uses `unsafe` (canonical ABI).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component;

pub use db::{Db, Dialect, SqlError, Statement, Value};
pub use model::{Change, Entry, Event, Job, Meta, ObjectRef, Pod, Record, Timestamp};
pub use settings::{Settings, SettingsError};
pub use sink::{HeldKind, MysqlSink, Plan, Planner, SinkError};
