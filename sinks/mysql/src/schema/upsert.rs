//! The idempotent multi-row upsert.

use super::{FINISHED_STATUSES, IS_IN_ETCD, STOPPED, Table, VERSION_NUM, quote};
use crate::db::Dialect;

/// The parts of a table's multi-row upsert: `head` + `rows` row
/// placeholders joined by `,` + `tail`.
#[derive(Debug, Clone)]
pub struct Upsert {
    /// `INSERT INTO t (cols) VALUES `.
    pub head: String,
    /// `(?, ?, ...)` for one row (on PostgreSQL the placeholders are
    /// numbered through the statement: `($1, $2), ($3, $4)`).
    pub row: String,
    /// The conflict clause.
    pub tail: String,
    dialect: Dialect,
    columns: usize,
}

impl Upsert {
    /// The statement text for `rows` rows.
    #[must_use]
    pub fn sql(&self, rows: usize) -> String {
        let mut sql =
            String::with_capacity(self.head.len() + rows * (self.row_len() + 1) + self.tail.len());
        sql.push_str(&self.head);
        for i in 0..rows {
            if i > 0 {
                sql.push(',');
            }
            if self.dialect == Dialect::Postgres {
                let first = i * self.columns + 1;
                let marks: Vec<String> = (first..first + self.columns)
                    .map(|n| self.dialect.placeholder(n))
                    .collect();
                sql.push('(');
                sql.push_str(&marks.join(", "));
                sql.push(')');
            } else {
                sql.push_str(&self.row);
            }
        }
        sql.push_str(&self.tail);
        sql
    }

    /// The number of columns (parameters) of one row.
    #[must_use]
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// The most bytes one row's placeholders take (PostgreSQL numbers them,
    /// up to its 65,535 parameters: `$65535`).
    #[must_use]
    pub fn row_len(&self) -> usize {
        match self.dialect {
            Dialect::Postgres => 2 + self.columns * "$65535, ".len(),
            _ => self.row.len(),
        }
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
/// `is_in_etcd`) are assigned last, in that order. SQLite and PostgreSQL
/// (`ON CONFLICT ... DO UPDATE`) evaluate every assignment on the stored
/// row; PostgreSQL needs the stored row's columns qualified with the table
/// name. The version guard is in every assignment, not in a `WHERE` of the
/// update: a stale removal still marks the row removed.
/// [`crate::rows::merge`] is the same rule in Rust.
#[must_use]
pub fn upsert(dialect: Dialect, table: &Table) -> Upsert {
    let q = |s: &str| quote(dialect, s);
    let new = |c: &str| match dialect {
        Dialect::Mysql => format!("VALUES({})", q(c)),
        Dialect::Sqlite | Dialect::Postgres => format!("excluded.{}", q(c)),
    };
    let table_name = q(table.name.as_str());
    let old = |c: &str| match dialect {
        Dialect::Postgres => format!("{table_name}.{}", q(c)),
        Dialect::Mysql | Dialect::Sqlite => q(c),
    };
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
            "{qd} = CASE WHEN COALESCE({od}, 0) <> 0 OR {nd} <> 0 THEN 1 ELSE 0 END",
            qd = q(d),
            od = old(d),
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
        "{v} = CASE WHEN {take} THEN {nv} ELSE {ov} END",
        v = q(VERSION_NUM),
        ov = old(VERSION_NUM),
        nv = new(VERSION_NUM),
    ));
    sets.push(format!(
        "{e} = CASE WHEN COALESCE({oe}, 1) = 0 OR {ne} = 0 THEN 0 ELSE 1 END",
        e = q(IS_IN_ETCD),
        oe = old(IS_IN_ETCD),
        ne = new(IS_IN_ETCD),
    ));
    let tail = match dialect {
        Dialect::Mysql => format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", ")),
        Dialect::Sqlite | Dialect::Postgres => format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            q(table.key_name()),
            sets.join(", ")
        ),
    };
    Upsert {
        head,
        row,
        tail,
        dialect,
        columns: table.columns.len(),
    }
}
