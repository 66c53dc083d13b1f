//! KubeDL's tables as KubeDL's own storage code (gorm models `dmo.Job` and
//! `dmo.Pod`, v0.5.0) creates them: the one fixture of their columns, used
//! both to check the tables kubesink creates and to create a "KubeDL-made"
//! table that kubesink must migrate.

/// `job_info`'s columns and MariaDB types, in KubeDL's order (after `id`).
/// Without kubesink's `gmt_finished`, which the seed document adds.
pub const JOB_COLUMNS: &[(&str, &str)] = &[
    ("name", "varchar(128)"),
    ("namespace", "varchar(128)"),
    ("job_id", "varchar(64)"),
    ("version", "varchar(32)"),
    ("status", "varchar(32)"),
    ("kind", "varchar(32)"),
    ("resources", "text"),
    ("deploy_region", "varchar(64)"),
    ("tenant", "varchar(255)"),
    ("owner", "varchar(255)"),
    ("deleted", "tinyint(4)"),
    ("is_in_etcd", "tinyint(4)"),
    ("remark", "text"),
    ("gmt_created", "datetime"),
    ("gmt_modified", "datetime"),
    ("gmt_job_running", "datetime"),
    ("gmt_job_finished", "datetime"),
];

/// `replica_info`'s columns and MariaDB types, in KubeDL's order.
pub const POD_COLUMNS: &[(&str, &str)] = &[
    ("name", "varchar(128)"),
    ("namespace", "varchar(128)"),
    ("pod_id", "varchar(64)"),
    ("version", "varchar(32)"),
    ("status", "varchar(32)"),
    ("image", "varchar(255)"),
    ("job_id", "varchar(64)"),
    ("replica_type", "varchar(32)"),
    ("resources", "varchar(1024)"),
    ("host_ip", "varchar(64)"),
    ("pod_ip", "varchar(64)"),
    ("deploy_region", "varchar(64)"),
    ("deleted", "tinyint(4)"),
    ("is_in_etcd", "tinyint(4)"),
    ("remark", "text"),
    ("gmt_created", "datetime"),
    ("gmt_modified", "datetime"),
    ("gmt_started", "datetime"),
    ("gmt_finished", "datetime"),
];

/// `CREATE TABLE` for `table` with `columns` as gorm makes it: an unsigned
/// auto-increment `id`, every column nullable, no unique key.
pub fn create_table(table: &str, columns: &[(&str, &str)]) -> String {
    let mut ddl =
        format!("CREATE TABLE `{table}` (`id` bigint(20) unsigned NOT NULL AUTO_INCREMENT");
    for (name, ty) in columns {
        let null = if *ty == "text" { "" } else { " DEFAULT NULL" };
        ddl.push_str(&format!(", `{name}` {ty}{null}"));
    }
    ddl.push_str(", PRIMARY KEY (`id`))");
    ddl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_names_every_column_once_with_its_type() {
        let ddl = create_table("job_info", JOB_COLUMNS);
        assert!(ddl.starts_with("CREATE TABLE `job_info` (`id` bigint(20) unsigned"));
        for (name, ty) in JOB_COLUMNS {
            assert_eq!(ddl.matches(&format!("`{name}` {ty}")).count(), 1, "{name}");
        }
        assert!(ddl.ends_with("PRIMARY KEY (`id`))"));
    }
}
