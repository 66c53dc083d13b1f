//! SLS: the emulator checked against the official Python SDK, and the sls
//! sink through the real host into the emulator.

use std::path::PathBuf;

use anyhow::{Context as _, bail, ensure};
use kubesink_host::{CallError, Host, HostOptions, Limits, ModuleSource, SinkInstance, SinkSpec};
use kubesink_normalize::record::{Change, Entry, Event, Job, Meta, ObjectRef, Record, Timestamp};
use kubesink_tests::guests::guest_wasm;
use kubesink_tests::sls::{self, EmulatorConfig, python_sdk};
use kubesink_tests::sls::{Emulator, Fault};
use serde_json::Value;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Puts logs into the emulator with the unchanged `aliyun-log-python-sdk`
/// (lz4, zstd and raw bodies; lb and route paths), reads them back with
/// ListShards/GetCursor/PullLogs in lz4, zstd and raw, and checks the SDK's
/// view of refused requests. Installs the SDK into a cached venv (PyPI).
#[tokio::test]
async fn sls_emulator_conforms_to_python_sdk() -> anyhow::Result<()> {
    let python = tokio::task::spawn_blocking(python_sdk::python)
        .await?
        .context("installing aliyun-log-python-sdk")?;
    let emu = sls::start(EmulatorConfig::default()).await?;
    let key = &emu.config().keys[0];
    let script = workspace().join("tests/sls-conformance/conformance.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args([&emu.endpoint(), "kubesink", "events", &key.id, &key.secret])
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        out.status.success(),
        "conformance.py failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).context("conformance.py output")?;

    // Every put came back, in every response encoding, with its group
    // metadata and contents; route keys chose their shards.
    let tags = ["lz4", "zstd", "raw", "route-low", "route-high"];
    for mode in ["pulled_lz4", "pulled_zstd", "pulled_raw"] {
        let shards = result[mode].as_array().context("shards array")?;
        ensure!(
            shards.len() == 2,
            "{mode}: expected 2 shards, got {shards:?}"
        );
        let mut seen = Vec::new();
        for shard in shards {
            ensure!(
                shard["end_cursor_matches"] == true,
                "{mode}: read did not end at the end cursor"
            );
            for log in shard["logs"].as_array().context("logs")? {
                let tag = log["tag"].as_str().context("tag")?.to_string();
                ensure!(log["__topic__"] == "conformance", "{mode}: topic in {log}");
                ensure!(
                    log["__source__"] == format!("sdk-{tag}"),
                    "{mode}: source in {log}"
                );
                let i = log["i"].as_str().context("i")?;
                ensure!(
                    log["msg"] == format!("hello 世界 {i}"),
                    "{mode}: msg in {log}"
                );
                ensure!(
                    log["__time__"] == 1_700_000_000 + i.parse::<u64>()?,
                    "{mode}: time in {log}"
                );
                if tag == "route-low" {
                    ensure!(
                        shard["shard"] == 0,
                        "route-low landed in shard {}",
                        shard["shard"]
                    );
                }
                if tag == "route-high" {
                    ensure!(
                        shard["shard"] == 1,
                        "route-high landed in shard {}",
                        shard["shard"]
                    );
                }
                seen.push(tag);
            }
        }
        for tag in tags {
            let n = seen.iter().filter(|t| *t == tag).count();
            ensure!(n == 3, "{mode}: {n} logs tagged {tag}, want 3");
        }
    }
    let refused = |name: &str, code: &str, status: u64| -> anyhow::Result<()> {
        let got = &result[name];
        ensure!(
            got["code"] == code && got["status"] == status,
            "{name}: got {got}"
        );
        ensure!(
            got["request_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: no x-log-requestid seen by the SDK"
        );
        Ok(())
    };
    refused("wrong_secret", "SignatureNotMatch", 401)?;
    refused("unknown_key", "InvalidAccessKeyId", 401)?;
    refused("unknown_logstore", "LogStoreNotExist", 404)?;

    // The emulator's own view agrees, and saw what the SDK sent.
    ensure!(emu.logs("kubesink", "events").len() == 15, "stored logs");
    let puts: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.status == 200)
        .collect();
    ensure!(puts.len() == 5, "successful PutLogs: {}", puts.len());
    let compress: Vec<_> = puts
        .iter()
        .map(|r| r.header("x-log-compresstype"))
        .collect();
    ensure!(
        compress == [Some("lz4"), Some("zstd"), None, Some("lz4"), Some("lz4")],
        "compression types sent: {compress:?}"
    );
    for r in &puts {
        if r.header("host") != Some("kubesink.127.0.0.1") {
            bail!(
                "Host header {:?}, want kubesink.127.0.0.1",
                r.header("host")
            );
        }
    }
    Ok(())
}

// ---- the sls sink through the real host into the emulator ----

const SLS_SINK: &str = "kubesink-sink-sls";
const T0: i64 = 1_714_557_600; // 2024-05-01T10:00:00Z

fn meta(uid: &str) -> Meta {
    Meta {
        uid: uid.into(),
        name: format!("ev-{uid}"),
        namespace: "kubedl".into(),
        resource_version: "10".into(),
        resource_version_num: 10,
        labels: vec![],
        created: Timestamp {
            seconds: T0,
            nanos: 0,
        },
    }
}

fn event(uid: &str, count: u32) -> Entry {
    Change::Applied(Record::Event(Event {
        meta: meta(uid),
        involved: ObjectRef {
            api_version: "training.kubedl.io/v1alpha1".into(),
            kind: "TFJob".into(),
            namespace: "kubedl".into(),
            name: "mnist".into(),
            uid: "job-uid-1".into(),
        },
        event_type: "Normal".into(),
        reason: "SuccessfulCreatePod".into(),
        message: format!("Created pod: mnist-worker-{uid} ü"),
        source: "tfjob-controller/node-a".into(),
        count,
        first_seen: Timestamp {
            seconds: T0,
            nanos: 0,
        },
        last_seen: Timestamp {
            seconds: T0 + 60,
            nanos: 0,
        },
        region: "cn-hangzhou".into(),
    }))
}

fn job(uid: &str) -> Entry {
    Change::Applied(Record::Job(Job {
        meta: meta(uid),
        api_version: "training.kubedl.io/v1alpha1".into(),
        kind: "TFJob".into(),
        status: "Running".into(),
        resources: "{}".into(),
        tenant: "team-a".into(),
        owner: "alice".into(),
        region: "cn-hangzhou".into(),
        modified: Timestamp {
            seconds: T0 + 5,
            nanos: 0,
        },
        running_at: Some(Timestamp {
            seconds: T0 + 5,
            nanos: 0,
        }),
        finished_at: None,
        remark: String::new(),
    }))
}

/// A host with one sls sink pointed at `emu`.
struct Rig {
    _host: Host,
    sink: SinkInstance,
    _cache: tempfile::TempDir,
}

async fn rig(
    emu: &Emulator,
    allow: &[String],
    extra: &[(&str, &str)],
    secret: Option<&str>,
) -> anyhow::Result<Rig> {
    let cache = tempfile::tempdir()?;
    let host = Host::new(HostOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..HostOptions::default()
    })?;
    let key = &emu.config().keys[0];
    let mut settings: Vec<(String, String)> = vec![
        ("endpoint".into(), emu.endpoint()),
        ("project".into(), "kubesink".into()),
        ("logstore".into(), "events".into()),
        ("access_key_id".into(), key.id.clone()),
        (
            "access_key_secret".into(),
            secret.unwrap_or(&key.secret).to_string(),
        ),
    ];
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let sink = host
        .load(SinkSpec {
            name: "sls".into(),
            module: ModuleSource::Path(guest_wasm(SLS_SINK)?),
            settings,
            sql_grants: vec![],
            limits: Limits {
                http_allow: allow.to_vec(),
                ..Limits::default()
            },
        })
        .await?;
    Ok(Rig {
        _host: host,
        sink,
        _cache: cache,
    })
}

fn emulator_allow(emu: &Emulator) -> Vec<String> {
    vec![format!("http://{}", emu.addr())]
}

#[tokio::test]
async fn sls_sink_writes_events_with_kubedl_keys_into_emulator() -> anyhow::Result<()> {
    let emu = sls::start(EmulatorConfig::default()).await?;
    let mut rig = rig(&emu, &emulator_allow(&emu), &[], None).await?;
    let batch = vec![event("e1", 1), job("j1"), event("e2", 4), event("e3", 2)];
    rig.sink.write(&batch).await?;
    let logs = emu.logs("kubesink", "events");
    ensure!(
        logs.len() == 3,
        "3 event logs (jobs are off by default), got {}",
        logs.len()
    );
    let mut names: Vec<_> = logs.iter().filter_map(|l| l.get("Name")).collect();
    names.sort_unstable();
    ensure!(names == ["ev-e1", "ev-e2", "ev-e3"], "names {names:?}");
    let e2 = logs
        .iter()
        .find(|l| l.get("Name") == Some("ev-e2"))
        .context("ev-e2")?;
    let want = [
        ("FirstTimestamp", "2024-05-01T10:00:00Z"),
        ("LastTimestamp", "2024-05-01T10:01:00Z"),
        ("Count", "4"),
        ("Kind", "TFJob"),
        ("ObjUID", "job-uid-1"),
        ("ObjNamespace", "kubedl"),
        ("ObjName", "mnist"),
        ("Type", "Normal"),
        ("Reason", "SuccessfulCreatePod"),
        ("Message", "Created pod: mnist-worker-e2 ü"),
        ("Region", "cn-hangzhou"),
    ];
    for (k, v) in want {
        ensure!(e2.get(k) == Some(v), "{k}: {:?}, want {v}", e2.get(k));
    }
    ensure!(e2.contents.len() == 12, "keys {:?}", e2.contents);
    ensure!(
        e2.topic.is_empty() && e2.source == "tfjob-controller/node-a",
        "{e2:?}"
    );
    ensure!(e2.time == (T0 + 60) as u32, "time {}", e2.time);
    let puts = emu.requests();
    ensure!(
        puts.len() == 1,
        "one PutLogs for one source, got {}",
        puts.len()
    );
    let r = &puts[0];
    ensure!(
        r.path == "/logstores/events/shards/lb" && r.status == 200,
        "{r:?}"
    );
    ensure!(
        r.header("host") == Some("kubesink.127.0.0.1"),
        "host {:?}",
        r.header("host")
    );
    ensure!(r.header("x-log-compresstype") == Some("lz4"), "compression");

    // Jobs under a configured topic.
    let mut with_jobs =
        self::rig(&emu, &emulator_allow(&emu), &[("jobs_topic", "jobs")], None).await?;
    emu.clear();
    with_jobs.sink.write(&[job("j1")]).await?;
    let logs = emu.logs("kubesink", "events");
    ensure!(logs.len() == 1 && logs[0].topic == "jobs", "{logs:?}");
    ensure!(
        logs[0].get("Status") == Some("Running") && logs[0].get("Owner") == Some("alice"),
        "{logs:?}"
    );
    Ok(())
}

#[tokio::test]
async fn sls_sink_retries_quota_and_busy_then_lands_once() -> anyhow::Result<()> {
    let emu = sls::start(EmulatorConfig::default()).await?;
    let mut rig = rig(
        &emu,
        &emulator_allow(&emu),
        &[("max_logs_per_request", "2")],
        None,
    )
    .await?;
    let batch: Vec<Entry> = (0..5).map(|i| event(&format!("u{i}"), 1)).collect(); // 3 PutLogs
    emu.inject(Fault::Pass, 1);
    emu.inject(Fault::WriteQuotaExceeded, 1);
    match rig.sink.write(&batch).await {
        Err(CallError::Retryable(m)) => ensure!(m.contains("WriteQuotaExceed"), "{m}"),
        other => bail!("403 quota: want retryable, got {other:?}"),
    }
    emu.inject(Fault::ServerBusy, 1);
    match rig.sink.write(&batch).await {
        Err(CallError::Retryable(m)) => {
            ensure!(m.contains("ServerBusy") && m.contains("503"), "{m}")
        }
        other => bail!("503: want retryable, got {other:?}"),
    }
    emu.inject(Fault::InternalError, 1);
    ensure!(
        matches!(rig.sink.write(&batch).await, Err(CallError::Retryable(_))),
        "500 is retryable"
    );
    rig.sink.write(&batch).await?;
    let logs = emu.logs("kubesink", "events");
    let mut names: Vec<_> = logs.iter().filter_map(|l| l.get("Name")).collect();
    names.sort_unstable();
    ensure!(
        names == ["ev-u0", "ev-u1", "ev-u2", "ev-u3", "ev-u4"],
        "each event once: {names:?}"
    );
    Ok(())
}

/// A batch's PutLogs go out `max_in_flight` at a time: with every request
/// held 1 s by the emulator, 4 are in flight at once (not 1, not 5), and
/// each event lands once; with `max_in_flight` 1 they go one by one.
#[tokio::test]
async fn sls_sink_sends_a_batch_max_in_flight_at_a_time() -> anyhow::Result<()> {
    let emu = sls::start(EmulatorConfig::default()).await?;
    let mut rig = rig(
        &emu,
        &emulator_allow(&emu),
        &[("max_logs_per_request", "1"), ("max_in_flight", "4")],
        None,
    )
    .await?;
    let batch: Vec<Entry> = (0..8).map(|i| event(&format!("u{i}"), 1)).collect(); // 8 PutLogs
    emu.inject(Fault::Delay(std::time::Duration::from_secs(1)), 8);
    rig.sink.write(&batch).await?;
    ensure!(
        emu.most_in_flight() == 4,
        "{} PutLogs in flight at most, want max_in_flight 4",
        emu.most_in_flight()
    );
    let mut names: Vec<_> = emu
        .logs("kubesink", "events")
        .iter()
        .filter_map(|l| l.get("Name").map(str::to_string))
        .collect();
    names.sort_unstable();
    let want: Vec<String> = (0..8).map(|i| format!("ev-u{i}")).collect();
    ensure!(names == want, "each event once: {names:?}");

    let mut one = self::rig(
        &emu,
        &emulator_allow(&emu),
        &[("max_logs_per_request", "1"), ("max_in_flight", "1")],
        None,
    )
    .await?;
    emu.clear();
    emu.inject(Fault::Delay(std::time::Duration::from_millis(200)), 3);
    one.sink.write(&batch[..3]).await?;
    ensure!(
        emu.most_in_flight() == 1 && emu.request_count() == 3,
        "max_in_flight 1: {} at once, {} requests",
        emu.most_in_flight(),
        emu.request_count()
    );
    Ok(())
}

#[tokio::test]
async fn sls_sink_wrong_key_is_fatal_and_names_no_secret() -> anyhow::Result<()> {
    let emu = sls::start(EmulatorConfig::default()).await?;
    let mut rig = rig(&emu, &emulator_allow(&emu), &[], Some("wrong-secret-value")).await?;
    match rig.sink.write(&[event("e1", 1)]).await {
        Err(CallError::Fatal(m)) => {
            ensure!(m.contains("SignatureNotMatch") && m.contains("401"), "{m}");
            ensure!(!m.contains("wrong-secret-value"), "the secret leaked: {m}");
        }
        other => bail!("wrong secret: want fatal, got {other:?}"),
    }
    ensure!(emu.logs("kubesink", "events").is_empty(), "nothing stored");
    Ok(())
}

#[tokio::test]
async fn sls_sink_outside_its_allow_list_is_denied() -> anyhow::Result<()> {
    let emu = sls::start(EmulatorConfig::default()).await?;
    // Same host, another port; and the empty list.
    for allow in [
        vec![format!(
            "http://127.0.0.1:{}",
            emu.addr().port().wrapping_add(1).max(1)
        )],
        vec![],
    ] {
        let mut rig = rig(&emu, &allow, &[], None).await?;
        match rig.sink.write(&[event("e1", 1)]).await {
            Err(CallError::Fatal(m)) => {
                ensure!(m.contains("denied") && m.contains("allow-list"), "{m}")
            }
            other => bail!("allow {allow:?}: want fatal denial, got {other:?}"),
        }
    }
    ensure!(
        emu.request_count() == 0,
        "{} requests reached the emulator",
        emu.request_count()
    );
    Ok(())
}

#[tokio::test]
async fn sls_sink_rejects_unknown_setting_at_load() -> anyhow::Result<()> {
    let emu = sls::start(EmulatorConfig::default()).await?;
    match rig(&emu, &emulator_allow(&emu), &[("log_store", "x")], None).await {
        Err(e) => {
            let text = format!("{e:#}");
            ensure!(text.contains("unknown setting `log_store`"), "{text}");
        }
        Ok(_) => bail!("an unknown setting was accepted"),
    }
    Ok(())
}

/// 100k events in batches of 1000 through the host and the sink into the
/// emulator (all on this machine, debug-built emulator); prints events/s and
/// raw MB/s, and checks every event landed once.
#[tokio::test]
async fn sls_sink_throughput_100k_events_into_emulator() -> anyhow::Result<()> {
    const N: usize = 100_000;
    let emu = sls::start(EmulatorConfig::default()).await?;
    let mut rig = rig(&emu, &emulator_allow(&emu), &[], None).await?;
    let events: Vec<Entry> = (0..N).map(|i| event(&format!("u{i}"), 1)).collect();
    let started = std::time::Instant::now();
    for batch in events.chunks(1000) {
        rig.sink.write(batch).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = emu.requests();
    let raw: u64 = requests
        .iter()
        .filter_map(|r| r.header("x-log-bodyrawsize")?.parse::<u64>().ok())
        .sum();
    let sent: usize = requests.iter().map(|r| r.body_len).sum();
    let logs = emu.logs("kubesink", "events");
    ensure!(logs.len() == N, "{} of {N} events stored", logs.len());
    let distinct: std::collections::HashSet<_> =
        logs.iter().filter_map(|l| l.get("Name")).collect();
    ensure!(
        distinct.len() == N,
        "duplicates: {} distinct",
        distinct.len()
    );
    println!(
        "sls throughput: {N} events in {elapsed:.2} s = {:.0} events/s; raw {:.1} MB ({:.1} MB/s), lz4 on the wire {:.1} MB, {} requests",
        N as f64 / elapsed,
        raw as f64 / 1e6,
        raw as f64 / 1e6 / elapsed,
        sent as f64 / 1e6,
        requests.len()
    );
    Ok(())
}
