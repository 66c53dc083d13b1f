//! The sink's settings (the `settings` map of its configuration, passed to
//! `init`): parsed and checked here, so a typo is a fatal error naming the
//! key instead of a silently ignored option. See the crate docs for the list.

use std::fmt;

/// Checked settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The sql connection name to open (`connection`, default `default`).
    pub connection: String,
    /// Write jobs (`jobs`, default true).
    pub jobs: bool,
    /// Write pods (`pods`, default true).
    pub pods: bool,
    /// Write events (`events`, default true).
    pub events: bool,
    /// Jobs table (`job_table`, default `job_info`).
    pub job_table: Ident,
    /// Pods table (`pod_table`, default `replica_info`).
    pub pod_table: Ident,
    /// Events table (`event_table`, default `event_info`).
    pub event_table: Ident,
    /// Create missing tables in `init` (`create_tables`, default true).
    pub create_tables: bool,
    /// Most rows in one upsert statement (`max_rows_per_statement`,
    /// 1..=10000, default 500).
    pub max_rows_per_statement: usize,
    /// Most bytes (text plus parameters, estimated) in one upsert statement
    /// (`max_statement_bytes`, 4096..=16777216, default 1048576).
    pub max_statement_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            connection: "default".to_owned(),
            jobs: true,
            pods: true,
            events: true,
            job_table: Ident("job_info".to_owned()),
            pod_table: Ident("replica_info".to_owned()),
            event_table: Ident("event_info".to_owned()),
            create_tables: true,
            max_rows_per_statement: 500,
            max_statement_bytes: 1 << 20,
        }
    }
}

/// Why the settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A key this sink does not know.
    #[error(
        "unknown setting `{0}` (known: connection, jobs, pods, events, job_table, pod_table, event_table, create_tables, max_rows_per_statement, max_statement_bytes)"
    )]
    UnknownKey(String),
    /// A key given twice.
    #[error("setting `{0}` is given more than once")]
    Duplicate(String),
    /// A value that does not parse or is out of range.
    #[error("setting `{key}`: invalid value `{value}`: {why}")]
    Invalid {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What was expected.
        why: &'static str,
    },
    /// Nothing to write.
    #[error("settings `jobs`, `pods` and `events` are all false: nothing to write")]
    NothingEnabled,
    /// Two kinds share a table.
    #[error("settings `{0}` and `{1}` name the same table `{2}`")]
    SameTable(&'static str, &'static str, String),
}

/// A checked SQL identifier (table name): ASCII letters, digits and `_`, not
/// starting with a digit, at most 64 characters, so it can be quoted into
/// SQL safely.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// Check `name`.
    pub fn new(name: &str) -> Option<Self> {
        let mut chars = name.chars();
        let first = chars.next()?;
        let ok = name.len() <= 64
            && (first.is_ascii_alphabetic() || first == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        ok.then(|| Self(name.to_owned()))
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, SettingsError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(SettingsError::Invalid {
            key: key.to_owned(),
            value: value.to_owned(),
            why: "expected true or false",
        }),
    }
}

fn parse_ident(key: &str, value: &str) -> Result<Ident, SettingsError> {
    Ident::new(value.trim()).ok_or_else(|| SettingsError::Invalid {
        key: key.to_owned(),
        value: value.to_owned(),
        why: "expected a table name of ASCII letters, digits and `_` (at most 64, not starting with a digit)",
    })
}

fn parse_range(
    key: &str,
    value: &str,
    min: usize,
    max: usize,
    why: &'static str,
) -> Result<usize, SettingsError> {
    match value.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(SettingsError::Invalid {
            key: key.to_owned(),
            value: value.to_owned(),
            why,
        }),
    }
}

impl Settings {
    /// Parse the settings map; unknown or repeated keys and bad values are
    /// errors naming the key.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, SettingsError> {
        let mut s = Settings::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            let key = key.as_str();
            if seen.contains(&key) {
                return Err(SettingsError::Duplicate(key.to_owned()));
            }
            seen.push(key);
            match key {
                "connection" => {
                    if value.is_empty() {
                        return Err(SettingsError::Invalid {
                            key: key.to_owned(),
                            value: value.clone(),
                            why: "expected a connection name",
                        });
                    }
                    s.connection = value.clone();
                }
                "jobs" => s.jobs = parse_bool(key, value)?,
                "pods" => s.pods = parse_bool(key, value)?,
                "events" => s.events = parse_bool(key, value)?,
                "job_table" => s.job_table = parse_ident(key, value)?,
                "pod_table" => s.pod_table = parse_ident(key, value)?,
                "event_table" => s.event_table = parse_ident(key, value)?,
                "create_tables" => s.create_tables = parse_bool(key, value)?,
                "max_rows_per_statement" => {
                    s.max_rows_per_statement =
                        parse_range(key, value, 1, 10_000, "expected an integer in 1..=10000")?;
                }
                "max_statement_bytes" => {
                    s.max_statement_bytes = parse_range(
                        key,
                        value,
                        4096,
                        16 << 20,
                        "expected an integer in 4096..=16777216",
                    )?;
                }
                other => return Err(SettingsError::UnknownKey(other.to_owned())),
            }
        }
        if !(s.jobs || s.pods || s.events) {
            return Err(SettingsError::NothingEnabled);
        }
        let tables = [
            ("job_table", s.jobs, &s.job_table),
            ("pod_table", s.pods, &s.pod_table),
            ("event_table", s.events, &s.event_table),
        ];
        for (i, (ka, ea, ta)) in tables.iter().enumerate() {
            for (kb, eb, tb) in &tables[i + 1..] {
                if *ea && *eb && ta.as_str().eq_ignore_ascii_case(tb.as_str()) {
                    return Err(SettingsError::SameTable(ka, kb, ta.to_string()));
                }
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_when_empty() {
        let s = Settings::parse(&[]).expect("empty settings are valid");
        assert_eq!(s, Settings::default());
        assert_eq!(s.connection, "default");
        assert_eq!(s.job_table.as_str(), "job_info");
        assert_eq!(s.pod_table.as_str(), "replica_info");
        assert_eq!(s.event_table.as_str(), "event_info");
        assert!(s.jobs && s.pods && s.events && s.create_tables);
    }

    #[test]
    fn parses_every_key() {
        let s = Settings::parse(&kv(&[
            ("connection", "meta"),
            ("jobs", "true"),
            ("pods", "0"),
            ("events", "no"),
            ("job_table", "jobs_v2"),
            ("pod_table", "_pods"),
            ("event_table", "ev"),
            ("create_tables", "false"),
            ("max_rows_per_statement", "100"),
            ("max_statement_bytes", "65536"),
        ]))
        .expect("valid");
        assert_eq!(s.connection, "meta");
        assert!(s.jobs && !s.pods && !s.events && !s.create_tables);
        assert_eq!(s.job_table.as_str(), "jobs_v2");
        assert_eq!(s.pod_table.as_str(), "_pods");
        assert_eq!(s.max_rows_per_statement, 100);
        assert_eq!(s.max_statement_bytes, 65536);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Settings::parse(&kv(&[("jobs", "true"), ("tabel", "x")])).unwrap_err();
        assert_eq!(err, SettingsError::UnknownKey("tabel".into()));
        assert!(err.to_string().contains("`tabel`"));
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let err = Settings::parse(&kv(&[("pods", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("`pods`") && err.to_string().contains("maybe"));
        for bad in ["1abc", "a-b", "x; DROP TABLE y", "", "a`b", &"x".repeat(65)] {
            let err = Settings::parse(&kv(&[("job_table", bad)])).unwrap_err();
            assert!(
                matches!(err, SettingsError::Invalid { ref key, .. } if key == "job_table"),
                "{bad}: {err}"
            );
        }
        assert!(Settings::parse(&kv(&[("max_rows_per_statement", "0")])).is_err());
        assert!(Settings::parse(&kv(&[("max_statement_bytes", "10")])).is_err());
        assert!(Settings::parse(&kv(&[("connection", "")])).is_err());
    }

    #[test]
    fn duplicates_nothing_enabled_and_shared_tables_are_refused() {
        assert_eq!(
            Settings::parse(&kv(&[("jobs", "true"), ("jobs", "false")])).unwrap_err(),
            SettingsError::Duplicate("jobs".into())
        );
        assert_eq!(
            Settings::parse(&kv(&[
                ("jobs", "false"),
                ("pods", "false"),
                ("events", "false")
            ]))
            .unwrap_err(),
            SettingsError::NothingEnabled
        );
        assert!(matches!(
            Settings::parse(&kv(&[("pod_table", "JOB_INFO")])).unwrap_err(),
            SettingsError::SameTable("job_table", "pod_table", _)
        ));
        // A disabled kind may name any table.
        assert!(Settings::parse(&kv(&[("pods", "false"), ("pod_table", "job_info")])).is_ok());
    }
}
