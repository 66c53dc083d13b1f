//! Bad input at the database end: the mysql sink (the real component in the
//! real host) stores text longer than its column cut at a character
//! boundary instead of failing the batch, and unusual Unicode (4-byte
//! emoji, ZWJ sequences, combining marks, bidi controls, a BOM, CJK,
//! mathematical letters, quotes and SQL look-alikes) comes back exactly as
//! sent, on SQLite, on MariaDB (`utf8mb4` tables) and on PostgreSQL (UTF-8).
//! Test names say which database they need; MariaDB and PostgreSQL tests
//! start the test server or fail.

use std::path::PathBuf;

use anyhow::{Context, bail, ensure};
use kubesink_host::sql::{ConnectionConfig, Value};
use kubesink_host::{Host, HostOptions, Limits, ModuleSource, SinkInstance, SinkSpec};
use kubesink_normalize::record::Record;
use kubesink_tests::guests::guest_wasm;
use kubesink_tests::mariadb::{TestDb, fresh_database};
use kubesink_tests::postgres as pg;
use kubesink_tests::records::{applied, event, job, pod};

const CONN: &str = "default";

/// Strings that break naive code: multi-unit graphemes, 4-byte characters,
/// invisible and direction-changing characters, quotes and SQL.
const UNUSUAL: &[&str] = &[
    "😀🚀🧪",
    "👩‍👩‍👧‍👦 family",
    "🏳️‍🌈 flag",
    "e\u{301}le\u{300}ve (combining)",
    "\u{202E}txt.exe\u{202C} (bidi override)",
    "\u{FEFF}bom-first",
    "zero\u{200B}width\u{200D}joiner",
    "训练任务-视觉组",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙",
    "O'Brien \"quoted\" `tick` \\back\\slash",
    "'; DROP TABLE job_info; --",
    "100% _like_ %s {}",
    "tab\tnew\nline\rcr\u{1}ctl\u{7f}del",
    "Ωmega ß ﬁ ǅ",
];

enum Backend {
    Sqlite { _dir: tempfile::TempDir },
    Mariadb(TestDb),
    Postgres(pg::TestDb),
}

struct Fixture {
    host: Host,
    sink: SinkInstance,
    backend: Backend,
    _cache: tempfile::TempDir,
}

impl Fixture {
    async fn new(db: crate::Db) -> anyhow::Result<Self> {
        let (backend, url) = match db {
            crate::Db::Mariadb => {
                let db = fresh_database("bad_input").await?;
                let url = db.url().to_owned();
                (Backend::Mariadb(db), url)
            }
            crate::Db::Postgres => {
                let db = pg::fresh_database("bad_input").await?;
                let url = db.url().to_owned();
                (Backend::Postgres(db), url)
            }
            crate::Db::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("sink.db").display());
                (Backend::Sqlite { _dir: dir }, url)
            }
        };
        let cache = tempfile::tempdir()?;
        let host = Host::new(HostOptions {
            cache_dir: Some(cache.path().to_owned()),
            sql: vec![ConnectionConfig::new(CONN, url)],
            kafka: Vec::new(),
        })?;
        let wasm: PathBuf = guest_wasm("kubesink-sink-mysql")?;
        let sink = host
            .load(SinkSpec {
                name: "mysql".into(),
                module: ModuleSource::Path(wasm),
                settings: vec![],
                sql_grants: vec![CONN.into()],
                limits: Limits::default(),
            })
            .await
            .context("loading the mysql sink")?;
        Ok(Self {
            host,
            sink,
            backend,
            _cache: cache,
        })
    }

    /// Text columns of the row of `table` whose `key` is `uid`.
    async fn texts(
        &self,
        table: &str,
        key: &str,
        uid: &str,
        columns: &[&str],
    ) -> anyhow::Result<Vec<String>> {
        let mark = match self.backend {
            Backend::Postgres(_) => "$1",
            _ => "?",
        };
        let sql = format!(
            "SELECT {} FROM {table} WHERE {key} = {mark}",
            columns.join(", ")
        );
        let conn = self.host.sql_pools().get(CONN).context("connection")?;
        let rows = conn.query(&sql, &[Value::Text(uid.to_owned())]).await?;
        let [row] = rows.as_slice() else {
            bail!(
                "{table}: expected one row for {key} = {uid}, got {}",
                rows.len()
            );
        };
        row.iter()
            .zip(columns)
            .map(|(v, c)| match v {
                Value::Text(s) => Ok(s.clone()),
                Value::Bytes(b) => String::from_utf8(b.clone())
                    .with_context(|| format!("{table}.{c} for {uid} is not UTF-8")),
                other => bail!("{table}.{c} for {uid}: expected text, got {other:?}"),
            })
            .collect()
    }

    async fn close(self) -> anyhow::Result<()> {
        self.host.sql_pools().close().await;
        match self.backend {
            Backend::Sqlite { .. } => {}
            Backend::Mariadb(db) => db.drop_database().await?,
            Backend::Postgres(db) => db.drop_database().await?,
        }
        Ok(())
    }
}

fn prefix_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Names and messages longer than their columns (in characters, with
/// 4-byte characters, and in bytes for `text`) are cut at a character
/// boundary; the batch is delivered, not rejected.
async fn over_long_text_is_cut_at_a_character_boundary(db: crate::Db) -> anyhow::Result<()> {
    let mut f = Fixture::new(db).await?;
    let emoji_name = "😀".repeat(300); // 300 chars, 1200 bytes; name is varchar(255)
    let reason = "é".repeat(200); // reason is varchar(128)
    // A message of 100,000 bytes whose 65,535-byte cut falls inside a
    // 4-byte character: 1 byte + 4-byte emoji.
    let message = format!("x{}", "🧪".repeat(25_000));
    let mut ev = event("ev-long", 7, 3);
    ev.meta.name = emoji_name.clone();
    ev.reason = reason.clone();
    ev.message = message.clone();
    let mut j = job("job-long", 7, "Failed");
    j.meta.name = "名".repeat(500); // varchar(128)
    j.remark = "🚀".repeat(20_000); // text: 80,000 bytes
    j.tenant = "t".repeat(1000); // varchar(255)
    let mut p = pod("pod-long", 7, "Running");
    p.image = format!("registry.example.com/{}", "ü".repeat(400)); // varchar(255)
    f.sink
        .write(&[
            applied(Record::Event(ev)),
            applied(Record::Job(j.clone())),
            applied(Record::Pod(p.clone())),
        ])
        .await
        .context("a batch with over-long text is delivered")?;

    let got = f
        .texts(
            "event_info",
            "event_id",
            "ev-long",
            &["name", "reason", "message"],
        )
        .await?;
    assert_eq!(got[0], "😀".repeat(255), "name cut to 255 characters");
    assert_eq!(got[1], "é".repeat(128), "reason cut to 128 characters");
    let stored = &got[2];
    assert!(
        stored.len() <= 65_535,
        "message within TEXT: {}",
        stored.len()
    );
    assert_eq!(stored.len(), 1 + 4 * 16_383, "cut before the split emoji");
    assert!(
        message.starts_with(stored.as_str()),
        "a prefix of the message"
    );

    let got = f
        .texts(
            "job_info",
            "job_id",
            "job-long",
            &["name", "remark", "tenant"],
        )
        .await?;
    assert_eq!(got[0], "名".repeat(128));
    assert_eq!(got[1], "🚀".repeat(16_383), "remark cut to 65,532 bytes");
    assert_eq!(got[2], "t".repeat(255));

    let got = f
        .texts("replica_info", "pod_id", "pod-long", &["image"])
        .await?;
    assert_eq!(got[0], prefix_chars(&p.image, 255));
    f.close().await
}

/// Every unusual string survives the round trip, byte for byte, in names,
/// labels-derived fields, messages and free text.
async fn unusual_unicode_round_trips(db: crate::Db) -> anyhow::Result<()> {
    let mut f = Fixture::new(db).await?;
    let mut batch = Vec::new();
    for (i, s) in UNUSUAL.iter().enumerate() {
        let mut ev = event(&format!("ev-{i}"), 3, 1);
        ev.meta.name = (*s).to_owned();
        ev.meta.namespace = (*s).to_owned();
        ev.reason = (*s).to_owned();
        ev.message = (*s).to_owned();
        ev.involved.name = (*s).to_owned();
        batch.push(applied(Record::Event(ev)));
        let mut j = job(&format!("job-{i}"), 3, "Running");
        j.meta.name = (*s).to_owned();
        j.tenant = (*s).to_owned();
        j.owner = (*s).to_owned();
        j.remark = (*s).to_owned();
        batch.push(applied(Record::Job(j)));
    }
    f.sink
        .write(&batch)
        .await
        .context("unusual text delivered")?;
    for (i, s) in UNUSUAL.iter().enumerate() {
        let got = f
            .texts(
                "event_info",
                "event_id",
                &format!("ev-{i}"),
                &["name", "namespace", "reason", "message", "obj_name"],
            )
            .await?;
        for (c, v) in ["name", "namespace", "reason", "message", "obj_name"]
            .iter()
            .zip(&got)
        {
            ensure!(v == s, "event_info.{c}: sent {s:?}, stored {v:?}");
        }
        let got = f
            .texts(
                "job_info",
                "job_id",
                &format!("job-{i}"),
                &["name", "tenant", "owner", "remark"],
            )
            .await?;
        for (c, v) in ["name", "tenant", "owner", "remark"].iter().zip(&got) {
            ensure!(v == s, "job_info.{c}: sent {s:?}, stored {v:?}");
        }
    }
    // Redelivery of the same batch changes nothing (no duplicate rows).
    f.sink.write(&batch).await?;
    let conn = f.host.sql_pools().get(CONN).context("connection")?;
    let rows = conn.query("SELECT COUNT(*) FROM event_info", &[]).await?;
    let n = match rows.first().and_then(|r| r.first()) {
        Some(Value::Int(n)) => *n,
        Some(Value::Uint(n)) => i64::try_from(*n)?,
        other => bail!("count: {other:?}"),
    };
    assert_eq!(n, UNUSUAL.len() as i64);
    f.close().await
}

// Test names: `bad_input::{sqlite,mariadb,postgres}::<check>`.
on_all!(
    over_long_text_is_cut_at_a_character_boundary,
    unusual_unicode_round_trips,
);
