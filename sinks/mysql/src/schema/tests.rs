use super::*;
use crate::db::Value;

fn table(kind: Kind, name: &str) -> Table {
    Table::new(kind, Ident::new(name).expect("valid"))
}

// KubeDL's columns and types: `KUBEDL_JOB`, `KUBEDL_POD`, shared with
// the end-to-end tests.
include!("../../../../tests/fixtures/kubedl/columns.rs");

#[test]
fn tables_have_every_kubedl_column_with_its_type() {
    for (kind, expected) in [(Kind::Job, KUBEDL_JOB), (Kind::Pod, KUBEDL_POD)] {
        let t = table(kind, "x");
        for (name, ty) in expected {
            let c = t
                .columns
                .iter()
                .find(|c| c.name == *name)
                .unwrap_or_else(|| panic!("{kind:?} lacks {name}"));
            assert_eq!(c.mysql, *ty, "{kind:?}.{name} on mysql");
            assert_eq!(c.sqlite, *ty, "{kind:?}.{name} on sqlite");
        }
    }
}

#[test]
fn mysql_ddl_has_keys_and_types() {
    let t = table(Kind::Pod, "replica_info");
    let ddl = create_statements(Dialect::Mysql, &t);
    assert_eq!(ddl.len(), 1);
    let sql = &ddl[0].sql;
    assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS `replica_info` ("));
    assert!(sql.contains("`id` bigint(20) unsigned NOT NULL AUTO_INCREMENT"));
    assert!(sql.contains("`pod_id` varchar(64) NOT NULL,"));
    assert!(sql.contains("`resources` varchar(1024) DEFAULT NULL,"));
    assert!(sql.contains("`version_num` bigint(20) unsigned NOT NULL DEFAULT 0,"));
    assert!(sql.contains("PRIMARY KEY (`id`)"));
    assert!(sql.contains("UNIQUE KEY `uk_pod_id` (`pod_id`)"));
    assert!(sql.contains("KEY `idx_job_id` (`job_id`)"));
    assert!(sql.ends_with("ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"));
    assert!(ddl[0].params.is_empty());
}

#[test]
fn sqlite_ddl_has_keys_and_types() {
    let t = table(Kind::Event, "ev");
    let ddl = create_statements(Dialect::Sqlite, &t);
    assert_eq!(ddl.len(), 2);
    let sql = &ddl[0].sql;
    assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS \"ev\" ("));
    assert!(sql.contains("\"id\" INTEGER PRIMARY KEY AUTOINCREMENT"));
    assert!(sql.contains("\"count\" int unsigned,"));
    assert!(sql.contains("\"version_num\" bigint unsigned NOT NULL DEFAULT 0,"));
    assert!(sql.contains("UNIQUE (\"event_id\")"));
    assert!(!sql.contains("DEFAULT NULL"));
    assert_eq!(
        ddl[1].sql,
        "CREATE INDEX IF NOT EXISTS \"idx_ev_obj_uid\" ON \"ev\" (\"obj_uid\")"
    );
}

fn assignment_positions(t: &Table, tail: &str, dialect: Dialect) -> Vec<(usize, &'static str)> {
    let key = t.key_name();
    let mut out: Vec<(usize, &'static str)> = t
        .columns
        .iter()
        .filter(|c| c.name != key)
        .map(|c| {
            let qc = quote(dialect, c.name);
            let at = tail
                .find(&format!("{qc} = CASE"))
                .unwrap_or_else(|| panic!("no assignment of {}", c.name));
            (at, c.name)
        })
        .collect();
    out.sort_unstable();
    out
}

#[test]
fn mysql_upsert_assigns_guard_columns_last() {
    let t = table(Kind::Job, "job_info");
    let up = upsert(Dialect::Mysql, &t);
    assert!(
        up.head
            .starts_with("INSERT INTO `job_info` (`name`, `namespace`, `job_id`")
    );
    assert_eq!(up.row.matches('?').count(), t.columns.len());
    assert!(up.tail.starts_with(" ON DUPLICATE KEY UPDATE "));
    assert!(
        up.tail
            .contains("VALUES(`version_num`) >= COALESCE(`version_num`, 0)")
    );
    assert!(!up.tail.contains(" AS new"));
    assert!(
        !up.tail.contains("`job_id` = "),
        "the key is never assigned"
    );
    let order: Vec<_> = assignment_positions(&t, &up.tail, Dialect::Mysql)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    let n = order.len();
    assert_eq!(
        &order[n - 4..],
        ["gmt_job_finished", "status", "version_num", "is_in_etcd"]
    );
    assert!(up.tail.contains(
            "`deleted` = CASE WHEN COALESCE(`deleted`, 0) <> 0 OR VALUES(`deleted`) <> 0 THEN 1 ELSE 0 END"
        ));
    assert!(
        !up.head.contains("`gmt_finished`"),
        "generated, never written"
    );
    assert_eq!(up.sql(2).matches("(?, ").count(), 2);
}

#[test]
fn sqlite_upsert_uses_on_conflict_and_excluded() {
    let t = table(Kind::Pod, "replica_info");
    let up = upsert(Dialect::Sqlite, &t);
    assert!(
        up.head
            .starts_with("INSERT INTO \"replica_info\" (\"name\"")
    );
    assert!(
        up.tail
            .starts_with(" ON CONFLICT (\"pod_id\") DO UPDATE SET ")
    );
    assert!(
        up.tail
            .contains("excluded.\"version_num\" >= COALESCE(\"version_num\", 0)")
    );
    assert!(up.tail.contains("WHEN excluded.\"is_in_etcd\" = 0 AND COALESCE(\"status\", '') NOT IN ('Succeeded', 'Failed') THEN 'Stopped'"));
    assert!(!up.tail.contains("VALUES("));
    // Every non-key column is assigned exactly once.
    let assigned = assignment_positions(&t, &up.tail, Dialect::Sqlite);
    assert_eq!(assigned.len(), t.columns.len() - 1);
    assert_eq!(up.tail.matches(" = CASE ").count(), t.columns.len() - 1);
    assert!(up.tail.contains(
        "\"deleted\" = CASE WHEN COALESCE(\"deleted\", 0) <> 0 OR excluded.\"deleted\" <> 0"
    ));
}

#[test]
fn migration_statements() {
    let t = table(Kind::Job, "job_info");
    let vn = t.columns[t.version];
    assert_eq!(
        add_column_statement(Dialect::Mysql, &t, &vn).sql,
        "ALTER TABLE `job_info` ADD COLUMN `version_num` bigint(20) unsigned NOT NULL DEFAULT 0"
    );
    assert_eq!(
        add_unique_key_statement(Dialect::Sqlite, &t).sql,
        "CREATE UNIQUE INDEX \"uk_job_info_job_id\" ON \"job_info\" (\"job_id\")"
    );
    let q = unique_key_query(Dialect::Mysql, &t);
    assert_eq!(
        q.params,
        vec![Value::Text("job_info".into()), Value::Text("job_id".into())]
    );
}

#[test]
fn postgres_ddl_maps_types_and_stores_the_generated_column() {
    let t = table(Kind::Job, "job_info");
    let ddl = create_statements(Dialect::Postgres, &t);
    assert_eq!(ddl.len(), 1);
    let sql = &ddl[0].sql;
    assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS \"job_info\" ("));
    assert!(sql.contains("\"id\" bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"));
    assert!(sql.contains("\"job_id\" varchar(64) NOT NULL,"));
    assert!(sql.contains("\"deleted\" smallint,"));
    assert!(sql.contains("\"gmt_job_finished\" timestamp,"));
    assert!(sql.contains("\"version_num\" bigint NOT NULL DEFAULT 0,"));
    assert!(
        sql.contains(
            "\"gmt_finished\" timestamp GENERATED ALWAYS AS (\"gmt_job_finished\") STORED"
        )
    );
    assert!(sql.contains("UNIQUE (\"job_id\")"));
    for unknown in ["tinyint", "datetime", "unsigned", "`"] {
        assert!(!sql.contains(unknown), "{unknown} in {sql}");
    }
}

#[test]
fn postgres_upsert_numbers_placeholders_and_qualifies_the_stored_row() {
    let t = table(Kind::Pod, "replica_info");
    let up = upsert(Dialect::Postgres, &t);
    let n = t.columns.len();
    let sql = up.sql(2);
    assert!(sql.contains("($1, $2, "), "{sql}");
    assert!(sql.contains(&format!(", ${n}),(${}, ", n + 1)), "{sql}");
    assert!(sql.contains(&format!(", ${})", 2 * n)), "{sql}");
    assert!(!sql.contains('?'), "{sql}");
    assert!(
        up.tail
            .starts_with(" ON CONFLICT (\"pod_id\") DO UPDATE SET ")
    );
    // Every read of the stored row is qualified (PostgreSQL calls a bare
    // column ambiguous beside `excluded`).
    assert!(
        up.tail
            .contains("COALESCE(\"replica_info\".\"is_in_etcd\", 1)")
    );
    assert!(
        up.tail
            .contains("ELSE \"replica_info\".\"version_num\" END")
    );
    assert!(!up.tail.contains("COALESCE(\"is_in_etcd\""), "{}", up.tail);
    let rows_text = sql.len() - up.head.len() - up.tail.len();
    assert!(2 * (up.row_len() + 1) >= rows_text, "row_len bounds a row");
}
