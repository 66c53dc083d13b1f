//! The database a mysql sink wrote, opened read-only: SQLite (a file) or
//! MySQL/MariaDB (a `mysql://` URL). Every value is read as text (`CAST(..
//! AS CHAR)` means text on both), so one query serves both dialects.

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{AssertSqlSafe, Connection, MySqlConnection, Row, SqliteConnection};

use super::HistoryError;

/// A row of text cells (`None` for SQL NULL).
pub(super) type Cells = Vec<Option<String>>;

/// An open database.
pub(super) enum Db {
    Sqlite(SqliteConnection),
    Mysql(MySqlConnection),
}

impl Db {
    /// Opens `target`: a `mysql://` (or `mariadb://`) URL, else a SQLite
    /// file path (which must exist: history never creates a database). A
    /// URL without a password takes it from `MYSQL_PWD`, as MySQL's own
    /// clients do, so that it need not stand on a command line.
    pub(super) async fn open(target: &str) -> Result<Db, HistoryError> {
        let shown = redacted(target);
        let err = |source| HistoryError::Db {
            db: shown.clone(),
            source,
        };
        if let Some(rest) = target
            .strip_prefix("mysql://")
            .or_else(|| target.strip_prefix("mariadb://"))
        {
            let mut url =
                url::Url::parse(&format!("mysql://{rest}")).map_err(|e| HistoryError::Target {
                    db: shown.clone(),
                    reason: e.to_string(),
                })?;
            if url.password().is_none()
                && let Ok(password) = std::env::var("MYSQL_PWD")
            {
                let _ = url.set_password(Some(&password));
            }
            let conn = MySqlConnection::connect(url.as_str()).await.map_err(err)?;
            return Ok(Db::Mysql(conn));
        }
        let path = target.strip_prefix("sqlite://").unwrap_or(target);
        if !std::path::Path::new(path).is_file() {
            return Err(HistoryError::Target {
                db: shown,
                reason: "no such file (history reads a database a mysql sink wrote)".into(),
            });
        }
        let conn = SqliteConnection::connect(&format!("sqlite://{path}?mode=ro"))
            .await
            .map_err(err)?;
        Ok(Db::Sqlite(conn))
    }

    /// `at` as the database compares it with a stored timestamp.
    pub(super) fn time_literal(&self, at: DateTime<Utc>) -> String {
        match self {
            // The mysql sink writes RFC 3339 text in UTC to SQLite.
            Db::Sqlite(_) => at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            Db::Mysql(_) => at.format("%Y-%m-%d %H:%M:%S").to_string(),
        }
    }

    /// Runs `sql` (`?` placeholders bound to `args` in order) and returns
    /// every cell as text.
    pub(super) async fn fetch(
        &mut self,
        sql: &str,
        args: &[String],
    ) -> Result<Vec<Cells>, HistoryError> {
        let err = |source| HistoryError::Query {
            sql: sql.to_owned(),
            source,
        };
        // The SQL is built from fixed text and validated table names; the
        // values are bound.
        macro_rules! run {
            ($conn:expr) => {{
                let mut q = sqlx::query(AssertSqlSafe(sql.to_owned()));
                for a in args {
                    q = q.bind(a.as_str());
                }
                let rows = q.fetch_all($conn).await.map_err(err)?;
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.try_get::<Option<String>, _>(i))
                            .collect::<Result<Cells, _>>()
                    })
                    .collect::<Result<Vec<Cells>, _>>()
                    .map_err(err)
            }};
        }
        match self {
            Db::Sqlite(c) => run!(&mut *c),
            Db::Mysql(c) => run!(&mut *c),
        }
    }

    pub(super) async fn close(self) {
        let _ = match self {
            Db::Sqlite(c) => c.close().await,
            Db::Mysql(c) => c.close().await,
        };
    }
}

/// `target` with a URL's password replaced by `***`.
pub(super) fn redacted(target: &str) -> String {
    match url::Url::parse(target) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => target.to_owned(),
    }
}

/// A stored timestamp: RFC 3339 (SQLite) or `YYYY-MM-DD HH:MM:SS[.f]`
/// (MySQL's DATETIME as text), taken as UTC.
pub(super) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_timestamps_parse_as_utc() {
        let want = DateTime::parse_from_rfc3339("2026-03-02T08:57:02Z").unwrap();
        assert_eq!(parse_time("2026-03-02T08:57:02Z"), Some(want.into()));
        assert_eq!(parse_time("2026-03-02 08:57:02"), Some(want.into()));
        assert_eq!(parse_time("2026-03-02 08:57:02.000000"), Some(want.into()));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redacted("mysql://kubedl:s3cret@db:3306/kubedl"),
            "mysql://kubedl:***@db:3306/kubedl"
        );
        assert_eq!(redacted("kubesink.db"), "kubesink.db");
    }
}
