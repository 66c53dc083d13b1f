//! The `kubesink` command as a user runs it: exit codes and error messages
//! for bad input, and the embedded default end to end. The bundled mysql
//! sink must be built first (`scripts/just guests`, which `scripts/just test`
//! does); without it these tests fail with the command's own message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kubesink(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubesink"))
        .args(args)
        .current_dir(dir)
        .env_remove("KUBESINK_CONFIG")
        .env_remove("KUBESINK_META_STORAGE")
        .env_remove("KUBESINK_EVENT_STORAGE")
        .env_remove("REGION")
        .env_remove("KUBESINK_DB")
        .output()
        .expect("running kubesink")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/kubedl/watch.json")
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn embedded_default_replays_the_fixture_and_prints_tables() {
    let dir = tmp();
    let out = kubesink(dir.path(), &["replay", fixture().to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(dir.path().join("kubesink.db").is_file());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for title in [
        "jobs (job_info)",
        "pods (replica_info)",
        "events (event_info)",
    ] {
        assert!(stdout.contains(title), "{title} missing from:\n{stdout}");
    }
    assert!(stdout.contains("mnist"), "{stdout}");
    // Replaying again changes nothing (idempotent): the same tables.
    let again = kubesink(dir.path(), &["replay", fixture().to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
}

#[test]
fn malformed_documents_are_reported_with_their_line_and_skipped() {
    let dir = tmp();
    let good = std::fs::read_to_string(fixture()).unwrap();
    let input = format!("{good}\n{{\"type\": \"ADDED\", \"object\": {{ broken }}}}\n");
    let bad_line = good.lines().count() + 2;
    std::fs::write(dir.path().join("in.json"), input).unwrap();
    let out = kubesink(dir.path(), &["replay", "in.json", "--no-show"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("in.json:{bad_line}:")), "{err}");
    // Everything good was delivered.
    let show = kubesink(dir.path(), &["show"]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("mnist"));
}

#[test]
fn unknown_config_field_names_file_and_field() {
    let dir = tmp();
    std::fs::write(
        dir.path().join("k.yaml"),
        "sinks:\n  - name: a\n    module: builtin:mysql\n    limits: { memroy: 1Mi }\n",
    )
    .unwrap();
    let out = kubesink(dir.path(), &["--config", "k.yaml", "replay", "-"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("k.yaml") && err.contains("sinks[0].limits.memroy"),
        "{err}"
    );
}

fn config_with_module(dir: &Path, module: &str) -> String {
    std::fs::write(
        dir.join("k.yaml"),
        format!(
            "connections:\n  db: {{ driver: sqlite, path: ./x.db }}\nsinks:\n  - name: broken\n    module: {module}\n    connections: [db]\n"
        ),
    )
    .unwrap();
    "k.yaml".into()
}

#[test]
fn missing_corrupt_and_wrong_world_modules_name_the_file() {
    let dir = tmp();
    let cases: [(&str, Option<&[u8]>); 4] = [
        ("missing.wasm", None),
        ("corrupt.wasm", Some(b"this is not wasm at all")),
        // A core module, not a component.
        ("core.wasm", Some(b"\0asm\x01\0\0\0")),
        // An empty component: valid, but exports no `kubesink:sink/sink`.
        ("empty.wasm", Some(b"\0asm\x0d\0\x01\0")),
    ];
    for (file, bytes) in cases {
        if let Some(b) = bytes {
            std::fs::write(dir.path().join(file), b).unwrap();
        }
        let cfg = config_with_module(dir.path(), file);
        let out = kubesink(dir.path(), &["--config", &cfg, "replay", "-"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{file}: {err}");
        assert!(
            err.contains(file),
            "{file}: error does not name the file: {err}"
        );
        assert!(
            err.contains("broken"),
            "{file}: error does not name the sink: {err}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{file}: one clear error expected: {err}"
        );
    }
}

#[test]
fn missing_replay_input_is_named() {
    let dir = tmp();
    let out = kubesink(dir.path(), &["replay", "nope.json"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nope.json"), "{err}");
}

/// KubeDL's switches and environment variables, as in KubeDL's Deployment,
/// against a real MariaDB: jobs and pods with `--meta-storage mysql`, events
/// added with `--event-storage mysql`, `--region` on every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_kubedl_switches_persist_jobs_pods_and_events() -> anyhow::Result<()> {
    use sqlx::Connection;
    let db = kubesink_tests::mariadb::fresh_database("cli").await?;
    let dir = tmp();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubesink"));
        cmd.args(args)
            .current_dir(dir.path())
            .env_remove("KUBESINK_CONFIG");
        for (k, v) in db.kubedl_env() {
            cmd.env(k, v);
        }
        cmd.output().expect("running kubesink")
    };
    let fixture = fixture();
    let fixture = fixture.to_str().unwrap();
    let out = run(&[
        "--meta-storage",
        "mysql",
        "--region",
        "cn-test",
        "replay",
        fixture,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !dir.path().join("kubesink.db").exists(),
        "no SQLite file with --meta-storage"
    );
    let mut conn = sqlx::MySqlConnection::connect(db.url()).await?;
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    assert_eq!(
        count("SELECT COUNT(*) FROM job_info")
            .fetch_one(&mut conn)
            .await?,
        2
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM replica_info")
            .fetch_one(&mut conn)
            .await?,
        5
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM job_info WHERE deploy_region <> 'cn-test'")
            .fetch_one(&mut conn)
            .await?,
        0
    );
    let events_before: i64 = count(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'event_info'",
    )
    .fetch_one(&mut conn)
    .await?;
    if events_before > 0 {
        assert_eq!(
            count("SELECT COUNT(*) FROM event_info")
                .fetch_one(&mut conn)
                .await?,
            0
        );
    }
    let out = run(&[
        "--meta-storage",
        "mysql",
        "--event-storage",
        "mysql",
        "replay",
        fixture,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        count("SELECT COUNT(*) FROM event_info")
            .fetch_one(&mut conn)
            .await?,
        62
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM job_info")
            .fetch_one(&mut conn)
            .await?,
        2
    );
    conn.close().await?;
    db.drop_database().await?;
    Ok(())
}

/// `--event-storage aliyun-sls` with KubeDL's SLS_* variables and no config
/// file: every event update of the fixture lands in the SLS emulator once,
/// with KubeDL's keys; a missing variable is a startup error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sls_event_storage_replays_every_event_update_into_the_emulator() -> anyhow::Result<()> {
    use kubesink_tests::sls;
    let emulator = sls::start(sls::EmulatorConfig::default()).await?;
    let dir = tmp();
    let fixture = fixture();
    let run = |missing: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubesink"));
        cmd.args(["--event-storage", "aliyun-sls", "replay", "--no-show"])
            .arg(&fixture)
            .current_dir(dir.path())
            .env_remove("KUBESINK_CONFIG")
            .env("SLS_ENDPOINT", emulator.endpoint())
            .env("SLS_KEY_ID", "kubesink-test-key")
            .env("SLS_KEY_SECRET", "kubesink-test-secret")
            .env("SLS_PROJECT", "kubesink")
            .env("SLS_LOG_STORE", "events");
        if let Some(var) = missing {
            cmd.env_remove(var);
        }
        cmd.output().expect("running kubesink")
    };
    let out = run(Some("SLS_PROJECT"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("SLS_PROJECT"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("kubesink-test-secret"));

    let out = run(None);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("kubesink-test-secret"), "{err}");
    // Every event update in the fixture, in order of the input.
    let mut updates = Vec::new();
    kubesink::source::replay::replay(
        std::io::BufReader::new(std::fs::File::open(&fixture)?),
        "watch.json",
        &kubesink::source::Normalizer::default(),
        |e| {
            if let kubesink_normalize::record::Change::Applied(
                kubesink_normalize::record::Record::Event(ev),
            ) = &e
            {
                updates.push((ev.meta.uid.clone(), ev.count.to_string(), ev.reason.clone()));
            }
            true
        },
    );
    let logs = emulator.logs("kubesink", "events");
    let mut got: Vec<(String, String, String)> = logs
        .iter()
        .map(|l| {
            (
                l.get("ObjUID").map(str::to_owned).unwrap_or_default(),
                l.get("Count").unwrap_or("").to_owned(),
                l.get("Reason").unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(got.len(), updates.len(), "one log per event update");
    // ObjUID is the involved object's uid; compare counts and reasons.
    let mut want: Vec<(String, String)> = updates.into_iter().map(|(_, c, r)| (c, r)).collect();
    let mut got2: Vec<(String, String)> = got.drain(..).map(|(_, c, r)| (c, r)).collect();
    want.sort();
    got2.sort();
    assert_eq!(got2, want);
    for key in [
        "FirstTimestamp",
        "LastTimestamp",
        "Name",
        "Kind",
        "ObjNamespace",
        "ObjName",
        "Type",
        "Message",
        "Region",
    ] {
        assert!(
            logs.iter().all(|l| l.get(key).is_some()),
            "key {key} missing"
        );
    }
    Ok(())
}
