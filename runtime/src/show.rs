//! Prints what a SQLite database written by the mysql sink holds, as
//! readable tables (jobs, pods, events) — the end of the quick start, and
//! `kubesink show`.

use std::fmt::Write as _;
use std::path::Path;

use comfy_table::{ContentArrangement, Table, presets};
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};
use thiserror::Error;

/// Errors reading the database.
#[derive(Debug, Error)]
pub enum ShowError {
    #[error("database {path}: {source}")]
    Db {
        path: String,
        #[source]
        source: sqlx::Error,
    },
}

/// Columns left out of the printed tables: internal keys and bulky JSON.
const HIDDEN: &[&str] = &[
    "id",
    "version_num",
    "resources",
    "deleted",
    "gmt_modified",
    "deploy_region",
    "tenant",
];

/// The tables printed, with a title each and the columns shown when the
/// table has them (otherwise every column but the [`HIDDEN`] ones).
const TABLES: &[(&str, &str, &[&str])] = &[
    (
        "job_info",
        "jobs",
        &[
            "namespace",
            "name",
            "kind",
            "status",
            "version",
            "owner",
            "is_in_etcd",
            "gmt_created",
            "gmt_job_running",
            "gmt_finished",
            "remark",
        ],
    ),
    (
        "replica_info",
        "pods",
        &[
            "namespace",
            "name",
            "replica_type",
            "status",
            "image",
            "host_ip",
            "is_in_etcd",
            "gmt_started",
            "gmt_finished",
            "remark",
        ],
    ),
    (
        "event_info",
        "events",
        &[
            "obj_kind",
            "obj_name",
            "type",
            "reason",
            "count",
            "first_timestamp",
            "last_timestamp",
            "is_in_etcd",
            "message",
        ],
    ),
];

/// Longest cell shown; longer values are cut with `…`.
const MAX_CELL: usize = 48;

/// Renders the tables of the SQLite file at `path`.
pub async fn render(path: &Path) -> Result<String, ShowError> {
    let shown = path.display().to_string();
    let err = |source| ShowError::Db {
        path: shown.clone(),
        source,
    };
    let url = format!("sqlite://{}?mode=ro", path.display());
    let mut conn = SqliteConnection::connect(&url).await.map_err(err)?;
    let mut out = String::new();
    for (table, title, preferred) in TABLES {
        let all: Vec<String> = sqlx::query(AssertSqlSafe(format!("PRAGMA table_info({table})")))
            .fetch_all(&mut conn)
            .await
            .map_err(err)?
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .collect();
        let mut columns: Vec<String> = preferred
            .iter()
            .filter(|c| all.iter().any(|a| a == *c))
            .map(|c| (*c).to_owned())
            .collect();
        if columns.is_empty() {
            columns = all
                .into_iter()
                .filter(|c| !HIDDEN.contains(&c.as_str()))
                .collect();
        }
        if columns.is_empty() {
            continue;
        }
        let select: Vec<String> = columns
            .iter()
            .map(|c| format!("CAST(\"{c}\" AS TEXT)"))
            .collect();
        // Table and column names come from the fixed list above and from
        // the database's own catalogue, quoted.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {table} ORDER BY id",
            select.join(", ")
        )))
        .fetch_all(&mut conn)
        .await
        .map_err(err)?;
        let mut t = Table::new();
        t.load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(columns.iter().map(String::as_str));
        for row in &rows {
            t.add_row((0..columns.len()).map(|i| {
                let v: Option<String> = row.get(i);
                cell(v.as_deref().unwrap_or(""))
            }));
        }
        let _ = writeln!(out, "{title} ({table}): {} rows\n{t}\n", rows.len());
    }
    Ok(out)
}

fn cell(v: &str) -> String {
    let flat = v.replace('\n', " ⏎ ");
    if flat.chars().count() <= MAX_CELL {
        return flat;
    }
    let mut s: String = flat.chars().take(MAX_CELL - 1).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn cells_are_flattened_and_cut_at_a_character_boundary() {
        assert_eq!(cell("a\nb"), "a ⏎ b");
        let long = "é".repeat(100);
        let c = cell(&long);
        assert_eq!(c.chars().count(), super::MAX_CELL);
        assert!(c.ends_with('…'));
    }
}
