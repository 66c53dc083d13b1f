//! `CREATE TABLE` for each dialect.

use super::{Generated, Table, VERSION_NUM, quote};
use crate::db::{Dialect, Statement};

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
