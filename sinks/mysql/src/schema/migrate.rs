//! The statements that check an existing table (its columns, its unique
//! key) and complete it: missing columns, generated columns, `version_num`
//! filled from `version`, duplicate rows merged, the unique key added.

use super::{Column, Generated, Table, VERSION_NUM, generated_definition, quote};
use crate::db::{Dialect, Statement, Value};

/// A query returning the table's existing columns, each as its name and
/// whether it is generated (1) or stored (0); no rows when the table does
/// not exist. (SQLite's `table_info` hides generated columns; `table_xinfo`
/// shows them, `hidden` 2 or 3.)
#[must_use]
pub fn columns_query(dialect: Dialect, table: &Table) -> Statement<'static> {
    let sql = match dialect {
        Dialect::Mysql => {
            "SELECT column_name, CASE WHEN extra LIKE '%GENERATED%' THEN 1 ELSE 0 END \
             FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ?"
        }
        Dialect::Sqlite => {
            "SELECT name, CASE WHEN hidden IN (2, 3) THEN 1 ELSE 0 END FROM pragma_table_xinfo(?)"
        }
        Dialect::Postgres => {
            "SELECT column_name::text, CASE WHEN is_generated = 'ALWAYS' THEN 1 ELSE 0 END \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    Statement {
        sql: sql.to_owned(),
        params: vec![Value::Text(table.name.to_string().into())],
    }
}

/// A query returning a row when the table has a unique index on exactly its
/// key column (what the upsert needs).
#[must_use]
pub fn unique_key_query(dialect: Dialect, table: &Table) -> Statement<'static> {
    let sql = match dialect {
        Dialect::Mysql => {
            "SELECT index_name FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = ? AND non_unique = 0 \
             GROUP BY index_name HAVING COUNT(*) = 1 AND MAX(column_name) = ?"
        }
        Dialect::Sqlite => {
            "SELECT il.name FROM pragma_index_list(?) AS il WHERE il.\"unique\" = 1 \
             AND (SELECT COUNT(*) FROM pragma_index_info(il.name)) = 1 \
             AND (SELECT ii.name FROM pragma_index_info(il.name) AS ii) = ?"
        }
        Dialect::Postgres => {
            "SELECT ic.relname::text FROM pg_index AS i \
             JOIN pg_class AS ic ON ic.oid = i.indexrelid \
             JOIN pg_class AS t ON t.oid = i.indrelid \
             JOIN pg_attribute AS a ON a.attrelid = t.oid AND a.attnum = i.indkey[0] \
             WHERE t.relnamespace = current_schema()::regnamespace AND t.relname = $1 \
             AND i.indisunique AND i.indnatts = 1 AND i.indpred IS NULL AND a.attname = $2"
        }
    };
    Statement {
        sql: sql.to_owned(),
        params: vec![
            Value::Text(table.name.to_string().into()),
            Value::Text(table.key_name().to_owned().into()),
        ],
    }
}

/// `ALTER TABLE ... ADD COLUMN` for a column an existing table lacks.
#[must_use]
pub fn add_column_statement(
    dialect: Dialect,
    table: &Table,
    column: &Column,
) -> Statement<'static> {
    let ty = column.ty(dialect);
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
pub fn add_generated_statement(
    dialect: Dialect,
    table: &Table,
    g: &Generated,
) -> Statement<'static> {
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
pub fn copy_into_source_statement(
    dialect: Dialect,
    table: &Table,
    g: &Generated,
) -> Statement<'static> {
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
pub fn drop_column_statement(dialect: Dialect, table: &Table, column: &str) -> Statement<'static> {
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
pub fn fill_version_num_statement(dialect: Dialect, table: &Table) -> Statement<'static> {
    let t = quote(dialect, table.name.as_str());
    let digits = match dialect {
        Dialect::Mysql => "`version` REGEXP '^[0-9]{1,19}$'",
        Dialect::Sqlite => {
            "\"version\" <> '' AND \"version\" NOT GLOB '*[^0-9]*' AND length(\"version\") <= 19"
        }
        // bigint is signed: at most 18 digits always fit.
        Dialect::Postgres => "\"version\" ~ '^[0-9]{1,18}$'",
    };
    let cast = match dialect {
        Dialect::Mysql => "CAST(`version` AS UNSIGNED)",
        Dialect::Sqlite => "CAST(\"version\" AS INTEGER)",
        Dialect::Postgres => "CAST(\"version\" AS bigint)",
    };
    let v = quote(dialect, VERSION_NUM);
    Statement::plain(format!(
        "UPDATE {t} SET {v} = {cast} WHERE COALESCE({v}, 0) = 0 AND {digits}"
    ))
}

/// A query returning one row: how many rows share their key with another
/// row, and how many keys they share.
#[must_use]
pub fn duplicates_query(dialect: Dialect, table: &Table) -> Statement<'static> {
    let t = quote(dialect, table.name.as_str());
    let k = quote(dialect, table.key_name());
    // PostgreSQL's SUM of bigint is numeric: back to bigint.
    let sum = match dialect {
        Dialect::Postgres => "COALESCE(SUM(n), 0)::bigint",
        _ => "COALESCE(SUM(n), 0)",
    };
    Statement::plain(format!(
        "SELECT {sum}, COUNT(*) FROM \
         (SELECT COUNT(*) AS n FROM {t} WHERE {k} IS NOT NULL GROUP BY {k} HAVING COUNT(*) > 1) AS d"
    ))
}

/// Deletes every row that has a newer row with the same key, newer meaning
/// a greater `version_num`, or an equal one and a greater `id` (the later
/// insert): one row per key is left, the newest version.
#[must_use]
pub fn delete_duplicates_statement(dialect: Dialect, table: &Table) -> Statement<'static> {
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
pub fn add_unique_key_statement(dialect: Dialect, table: &Table) -> Statement<'static> {
    let key = table.key_name();
    let index = match dialect {
        Dialect::Mysql => format!("uk_{key}"),
        // Index names are per database (SQLite) or schema (PostgreSQL).
        Dialect::Sqlite | Dialect::Postgres => format!("uk_{}_{key}", table.name),
    };
    Statement::plain(format!(
        "CREATE UNIQUE INDEX {} ON {} ({})",
        quote(dialect, &index),
        quote(dialect, table.name.as_str()),
        quote(dialect, key)
    ))
}
