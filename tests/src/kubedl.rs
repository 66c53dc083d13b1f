//! KubeDL's tables as KubeDL's own storage code (gorm models `dmo.Job` and
//! `dmo.Pod`, v0.5.0) creates them: the one fixture of their columns, used
//! both to check the tables kubesink creates and to create a "KubeDL-made"
//! table that kubesink must migrate.

include!("../fixtures/kubedl/columns.rs");

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
        let ddl = create_table("job_info", KUBEDL_JOB);
        assert!(ddl.starts_with("CREATE TABLE `job_info` (`id` bigint(20) unsigned"));
        for (name, ty) in KUBEDL_JOB {
            assert_eq!(ddl.matches(&format!("`{name}` {ty}")).count(), 1, "{name}");
        }
        assert!(ddl.ends_with("PRIMARY KEY (`id`))"));
    }
}
