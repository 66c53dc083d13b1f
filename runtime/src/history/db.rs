//! The database a mysql sink wrote, opened read-only: SQLite (a file),
//! MySQL/MariaDB (a `mysql://` URL) or PostgreSQL (a `postgres://` URL).
//! Every value is read as text (`CAST(.. AS CHAR)` means text on SQLite and
//! MySQL; PostgreSQL's `CHAR` is one character, so there the queries say
//! `TEXT`, and number their `?` as `$1`, `$2`, ...: see [`postgres_sql`]),
//! so one query serves every dialect.

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{AssertSqlSafe, Connection, MySqlConnection, PgConnection, Row, SqliteConnection};

use super::HistoryError;

/// A row of text cells (`None` for SQL NULL).
pub(super) type Cells = Vec<Option<String>>;

/// An open database.
pub(super) enum Db {
    Sqlite(SqliteConnection),
    Mysql(MySqlConnection),
    Postgres(PgConnection),
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
        if target.starts_with("postgres://") || target.starts_with("postgresql://") {
            // libpq's PGPASSWORD, when the URL has no password, as `psql`
            // does; sqlx reads it too.
            let conn = PgConnection::connect(target).await.map_err(err)?;
            return Ok(Db::Postgres(conn));
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
            Db::Mysql(_) | Db::Postgres(_) => at.format("%Y-%m-%d %H:%M:%S").to_string(),
        }
    }

    /// A comparison of the timestamp column `column` with a bound time
    /// ([`Db::time_literal`]): `column op ?` (PostgreSQL casts the text).
    pub(super) fn time_filter(&self, column: &str, op: &str) -> String {
        match self {
            Db::Postgres(_) => format!("{column} {op} CAST(? AS timestamp)"),
            Db::Sqlite(_) | Db::Mysql(_) => format!("{column} {op} ?"),
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
            ($conn:expr, $sql:expr) => {{
                let mut q = sqlx::query(AssertSqlSafe($sql.to_owned()));
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
            Db::Sqlite(c) => run!(&mut *c, sql),
            Db::Mysql(c) => run!(&mut *c, sql),
            Db::Postgres(c) => run!(&mut *c, postgres_sql(sql)),
        }
    }

    pub(super) async fn close(self) {
        let _ = match self {
            Db::Sqlite(c) => c.close().await,
            Db::Mysql(c) => c.close().await,
            Db::Postgres(c) => c.close().await,
        };
    }
}

/// One of history's queries for PostgreSQL: `CAST(.. AS CHAR)` becomes
/// `CAST(.. AS TEXT)` and each `?` becomes `$1`, `$2`, ... in order. Only
/// for history's own SQL (fixed text and checked table names: no `?` or
/// `AS CHAR)` inside a literal).
pub(super) fn postgres_sql(sql: &str) -> String {
    let sql = sql.replace(" AS CHAR)", " AS TEXT)");
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
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
    fn postgres_queries_read_text_and_number_placeholders() {
        assert_eq!(
            postgres_sql("SELECT CAST(a AS CHAR) AS a FROM t WHERE b = ? AND c IN (?, ?)"),
            "SELECT CAST(a AS TEXT) AS a FROM t WHERE b = $1 AND c IN ($2, $3)"
        );
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
