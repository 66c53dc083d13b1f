//! The sandbox host end to end: real guest components (built on demand
//! from `tests/guests/`) against a SQLite file through the `sql`
//! capability; bad modules; limits (deadline, memory cap, traps, log
//! flood) and recovery; grants; the compiled-component cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use kubesink_host::sql::{ConnectionConfig, Value};
use kubesink_host::{
    CacheOutcome, CallError, CompileError, FaultCause, HeldCap, Host, HostError, HostOptions,
    Limits, ModuleSource, SinkSpec,
};
use kubesink_normalize::record::{Change, Entry, Record, RecordKind, Shape, Timestamp};
use kubesink_tests::guests::{self, guest_wasm};
use kubesink_tests::records;

/// A job and an event as they exist, a removed pod, and a job deleted
/// while not watched (a tombstone).
fn batch() -> Vec<Entry> {
    vec![
        job("job-1"),
        pod("pod-1"),
        event("event-1"),
        Change::tombstone(
            RecordKind::Job,
            "job-0".into(),
            Timestamp {
                seconds: 5,
                nanos: 0,
            },
        ),
    ]
}

fn job(uid: &str) -> Entry {
    records::applied(Record::Job(records::job(uid, 42, "Running")))
}

fn pod(uid: &str) -> Entry {
    records::removed(Record::Pod(records::pod(uid, 42, "Running")), 0)
}

fn event(uid: &str) -> Entry {
    records::applied(Record::Event(records::event(uid, 42, 1)))
}

/// A host with one SQLite connection `main` in `dir`, caching under `dir/cache`.
fn host_in(dir: &Path) -> anyhow::Result<Host> {
    let url = format!("sqlite://{}?mode=rwc", dir.join("sink.db").display());
    Ok(Host::new(HostOptions {
        cache_dir: Some(dir.join("cache")),
        sql: vec![ConnectionConfig::new("main", url)],
        kafka: Vec::new(),
    })?)
}

fn spec(name: &str, wasm: PathBuf, limits: Limits) -> SinkSpec {
    SinkSpec {
        name: name.into(),
        module: ModuleSource::Path(wasm),
        settings: vec![],
        sql_grants: vec!["main".into()],
        limits,
    }
}

fn fast_limits() -> Limits {
    Limits {
        call_timeout: Duration::from_millis(1500),
        ..Limits::default()
    }
}

async fn received(host: &Host) -> anyhow::Result<Vec<Vec<Value>>> {
    let conn = host.sql_pools().get("main").context("connection main")?;
    Ok(conn
        .query(
            "SELECT uid, kind, change_kind, batches FROM received ORDER BY uid",
            &[],
        )
        .await?)
}

fn row(uid: &str, kind: &str, change: &str, batches: i64) -> Vec<Value> {
    vec![
        Value::Text(uid.into()),
        Value::Text(kind.into()),
        Value::Text(change.into()),
        Value::Int(batches),
    ]
}

#[tokio::test]
async fn host_counter_guest_receives_batches_in_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let mut sink = host
        .load(spec(
            "counter",
            guest_wasm(guests::COUNTER)?,
            Limits::default(),
        ))
        .await?;
    assert_eq!(sink.name(), "counter");
    // What its init returned: every kind, one row per uid.
    assert_eq!(sink.wants().shape, Shape::State);
    assert!(sink.wants().kinds.is_empty() && sink.wants().fields.is_empty());
    sink.write(&batch()).await?;
    let expected = vec![
        row("event-1", "event", "applied", 1),
        row("job-0", "job", "tombstone", 1),
        row("job-1", "job", "applied", 1),
        row("pod-1", "pod", "removed", 1),
    ];
    assert_eq!(received(&host).await?, expected);
    // Redelivery: same rows, counted twice.
    sink.write(&batch()).await?;
    let rows = received(&host).await?;
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r[3] == Value::Int(2)), "{rows:?}");
    let stats = sink.stats();
    assert_eq!((stats.writes, stats.faults, stats.builds), (2, 0, 1));
    assert!(stats.guest_time > Duration::ZERO);
    Ok(())
}

#[tokio::test]
async fn host_bad_modules_give_one_clear_error_naming_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let load = |path: PathBuf| host.load(spec("bad", path, Limits::default()));

    // Missing file.
    let missing = dir.path().join("missing.wasm");
    let err = load(missing.clone()).await.expect_err("missing file");
    assert!(matches!(err, HostError::Read { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("'bad'") && msg.contains(&missing.display().to_string()),
        "{msg}"
    );

    // Not wasm at all.
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, "this is not wasm")?;
    let err = load(text.clone()).await.expect_err("not wasm");
    assert!(
        matches!(
            &err,
            HostError::Compile {
                source: CompileError::NotWasm,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&text.display().to_string()),
        "{err}"
    );

    // A truncated component.
    let counter = std::fs::read(guest_wasm(guests::COUNTER)?)?;
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &counter[..counter.len() / 2])?;
    let err = load(truncated.clone()).await.expect_err("corrupt");
    assert!(
        matches!(
            &err,
            HostError::Compile {
                source: CompileError::Invalid(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&truncated.display().to_string()),
        "{err}"
    );

    // A core module.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0")?;
    let err = load(core.clone()).await.expect_err("core module");
    assert!(
        matches!(
            &err,
            HostError::Compile {
                source: CompileError::CoreModule,
                ..
            }
        ),
        "{err:?}"
    );

    // A valid component that exports nothing.
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\0\x01\0")?;
    let err = load(empty.clone()).await.expect_err("no export");
    assert!(matches!(err, HostError::World { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&empty.display().to_string()) && msg.contains("kubesink:sink/sink"),
        "{msg}"
    );

    // A component importing an interface the host does not provide:
    // type section [instance type { type 0 = func(); export "f": func 0 }],
    // import section ["foo:bar/baz" as an instance of that type].
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    let instance_type = [
        0x01, 0x42, 0x02, 0x01, 0x40, 0x00, 0x01, 0x00, 0x04, 0x00, 0x01, b'f', 0x01, 0x00,
    ];
    bytes.push(0x07);
    bytes.push(instance_type.len() as u8);
    bytes.extend_from_slice(&instance_type);
    let name = b"foo:bar/baz";
    let mut import = vec![0x01, 0x00, name.len() as u8];
    import.extend_from_slice(name);
    import.extend_from_slice(&[0x05, 0x00]);
    bytes.push(0x0a);
    bytes.push(import.len() as u8);
    bytes.extend_from_slice(&import);
    let foreign = dir.path().join("foreign.wasm");
    std::fs::write(&foreign, &bytes)?;
    let err = load(foreign.clone()).await.expect_err("unknown import");
    assert!(matches!(err, HostError::World { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&foreign.display().to_string()) && msg.contains("foo:bar/baz"),
        "{msg}"
    );

    // None of these is worth retrying.
    assert!(!err.is_retryable());
    Ok(())
}

#[tokio::test]
async fn host_spin_is_stopped_by_the_deadline_and_others_keep_working() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    // Generous, so that the other sink is served well within it even on a
    // loaded machine.
    let deadline = Duration::from_secs(3);
    let spin_limits = Limits {
        call_timeout: deadline,
        ..Limits::default()
    };
    let mut spin = host
        .load(spec("spin", guest_wasm(guests::SPIN)?, spin_limits))
        .await?;
    let mut counter = host
        .load(spec(
            "counter",
            guest_wasm(guests::COUNTER)?,
            Limits::default(),
        ))
        .await?;

    // While spin spins, the counter sink is served (spin yields to the
    // executor every epoch tick).
    let spin_batch = batch();
    let started = Instant::now();
    let (spun, counted) = tokio::join!(spin.write(&spin_batch), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let result = counter.write(&[job("during-spin")]).await;
        (result, started.elapsed())
    });
    let spin_elapsed = started.elapsed();
    let detail = fault_detail(spun, FaultCause::Timeout);
    assert!(detail.contains("'spin'"), "{detail}");
    assert!(
        spin_elapsed >= deadline && spin_elapsed < deadline + Duration::from_secs(5),
        "spin stopped after {spin_elapsed:?}"
    );
    let (counted, counted_at) = counted;
    counted?;
    assert!(
        counted_at < deadline,
        "counter finished at {counted_at:?}, while spin was still running"
    );
    assert!(!spin.is_live(), "a faulted store is discarded");

    // The same instance is rebuilt (init runs again) and faults the same way.
    spin.rebuild().await?;
    assert!(spin.is_live());
    fault_detail(spin.write(&batch()).await, FaultCause::Timeout);
    assert_eq!(spin.stats().faults, 2);
    assert_eq!(spin.stats().builds, 2);

    // The other sink keeps working.
    counter.write(&[job("after-spin")]).await?;
    let uids: Vec<Value> = received(&host)
        .await?
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(
        uids,
        vec![
            Value::Text("after-spin".into()),
            Value::Text("during-spin".into())
        ]
    );
    Ok(())
}

/// `kubesink run` keeps its sink instances but not the `Host` that loaded
/// them: the epoch ticker must live as long as an instance does, or a
/// spinning guest is never interrupted. Between calls the ticker is
/// parked (no tick while no guest runs).
#[tokio::test]
async fn host_spin_is_stopped_after_the_host_is_dropped_and_the_ticker_parks_between_calls()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let deadline = Duration::from_secs(1);
    let limits = Limits {
        call_timeout: deadline,
        ..Limits::default()
    };
    let mut spin = host
        .load(spec("spin", guest_wasm(guests::SPIN)?, limits))
        .await?;
    let epoch = host.epoch().clone();
    drop(host);
    let idle = epoch.ticks();
    assert_eq!(epoch.active(), 0, "no call in flight after the load");

    let started = Instant::now();
    let spun = spin.write(&batch()).await;
    let took = started.elapsed();
    assert!(
        matches!(
            spun,
            Err(CallError::Fault {
                cause: FaultCause::Timeout,
                ..
            })
        ),
        "{spun:?}"
    );
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(3),
        "spin stopped after {took:?}"
    );
    assert!(
        epoch.ticks() > idle,
        "the call ran the ticker ({} ticks)",
        epoch.ticks()
    );
    assert_eq!(epoch.active(), 0, "the call's guard was released");
    // Parked again: over 20 ticks' worth of time at most the tick under
    // way at the end of the call completes.
    let parked = epoch.ticks();
    tokio::time::sleep(kubesink_host::EPOCH_TICK * 20).await;
    assert!(
        epoch.ticks() <= parked + 1,
        "ticking with no call in flight: {parked} -> {}",
        epoch.ticks()
    );
    Ok(())
}

#[tokio::test]
async fn host_balloon_is_stopped_by_the_memory_cap_and_rebuilt() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..fast_limits()
    };
    let mut balloon = host
        .load(spec("balloon", guest_wasm(guests::BALLOON)?, limits))
        .await?;
    let mut counter = host
        .load(spec(
            "counter",
            guest_wasm(guests::COUNTER)?,
            Limits::default(),
        ))
        .await?;
    let started = Instant::now();
    let detail = fault_detail(balloon.write(&batch()).await, FaultCause::Memory);
    assert!(
        detail.contains("'balloon'") && detail.contains("memory cap"),
        "{detail}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "stopped by the cap, not the clock"
    );
    // Next write rebuilds first (and faults again the same way).
    fault_detail(balloon.write(&batch()).await, FaultCause::Memory);
    assert_eq!(balloon.stats().builds, 2);
    counter.write(&batch()).await?;
    assert_eq!(received(&host).await?.len(), 4);
    Ok(())
}

#[tokio::test]
async fn host_crash_is_a_trap_and_the_instance_is_rebuilt() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let mut crash = host
        .load(spec("crash", guest_wasm(guests::CRASH)?, fast_limits()))
        .await?;
    for round in 1..=2 {
        let detail = fault_detail(crash.write(&batch()).await, FaultCause::Trap);
        assert!(detail.contains("'crash'"), "round {round}: {detail}");
    }
    let stats = crash.stats();
    assert_eq!((stats.faults, stats.builds), (2, 2));
    // The panic message reached the log (stderr).
    assert!(stats.log_bytes > 0, "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn host_noisy_output_is_rate_limited() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let limits = Limits {
        log_bytes_per_sec: 8 << 10,
        ..Limits::default()
    };
    let mut noisy = host
        .load(SinkSpec {
            settings: vec![("lines".into(), "20000".into())],
            ..spec("noisy", guest_wasm(guests::NOISY)?, limits)
        })
        .await?;
    let started = Instant::now();
    noisy.write(&batch()).await?;
    let elapsed = started.elapsed();
    let stats = noisy.stats();
    // 20000 lines of ~100 bytes were written; at most a burst plus the
    // refill over the elapsed time was logged.
    let allowed = (8u64 << 10) as f64 * (1.0 + elapsed.as_secs_f64()) + 200.0;
    assert!(
        (stats.log_bytes as f64) <= allowed,
        "{stats:?} in {elapsed:?}"
    );
    assert!(stats.log_dropped_bytes > 1_500_000, "{stats:?}");
    assert_eq!(stats.faults, 0);
    Ok(())
}

#[tokio::test]
async fn host_ungranted_connection_is_denied() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let wasm = guest_wasm(guests::COUNTER)?;
    // Configured but not granted.
    let err = host
        .load(SinkSpec {
            sql_grants: vec![],
            ..spec("nogrant", wasm.clone(), Limits::default())
        })
        .await
        .expect_err("denied");
    match &err {
        HostError::Init {
            source: CallError::Fatal(msg),
            ..
        } => assert!(
            msg.contains("denied") && msg.contains("'nogrant'") && msg.contains("'main'"),
            "{msg}"
        ),
        other => panic!("expected a fatal init, got {other:?}"),
    }
    assert!(!err.is_retryable());
    // Granted but not configured.
    let err = host
        .load(SinkSpec {
            settings: vec![("connection".into(), "ghost".into())],
            sql_grants: vec!["ghost".into()],
            ..spec("ghosted", wasm, Limits::default())
        })
        .await
        .expect_err("not configured");
    let msg = err.to_string();
    assert!(
        msg.contains("denied") && msg.contains("not configured"),
        "{msg}"
    );
    Ok(())
}

#[tokio::test]
async fn host_database_down_at_start_is_retryable() -> anyhow::Result<()> {
    // Nothing listens on port 1: the pool is lazy, so the host starts, and
    // the sink's init reports the database as unavailable (retryable).
    let host = Host::new(HostOptions {
        cache_dir: None,
        sql: vec![ConnectionConfig::new(
            "main",
            "mysql://kube:topsecret@127.0.0.1:1/kubedl",
        )],
        kafka: Vec::new(),
    })?;
    let err = host
        .load(spec(
            "down",
            guest_wasm(guests::COUNTER)?,
            Limits::default(),
        ))
        .await
        .expect_err("database down");
    assert!(err.is_retryable(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("unavailable") && msg.contains("127.0.0.1:1/kubedl"),
        "{msg}"
    );
    assert!(!msg.contains("topsecret"), "{msg}");
    Ok(())
}

#[tokio::test]
async fn host_compiled_component_cache_is_reused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let wasm = guest_wasm(guests::COUNTER)?;
    let host = host_in(dir.path())?;
    let (_, first) = host
        .load_with_outcome(spec("c1", wasm.clone(), Limits::default()))
        .await?;
    let CacheOutcome::Stored(path) = first else {
        panic!("first load should compile and store, got {first:?}");
    };
    assert!(path.is_file(), "{path:?}");
    assert!(path.starts_with(dir.path().join("cache")));
    // Same host, and a new host on the same cache directory.
    let (_, second) = host
        .load_with_outcome(spec("c2", wasm.clone(), Limits::default()))
        .await?;
    assert_eq!(second, CacheOutcome::Hit(path.clone()));
    drop(host);
    let host = host_in(dir.path())?;
    let (mut sink, third) = host
        .load_with_outcome(spec("c3", wasm.clone(), Limits::default()))
        .await?;
    assert_eq!(third, CacheOutcome::Hit(path.clone()));
    sink.write(&batch()).await?;
    // Bytes from elsewhere compile to the same cache entry.
    let bytes = Arc::new(std::fs::read(&wasm)?);
    let (_, fourth) = host
        .load_with_outcome(SinkSpec {
            module: ModuleSource::Bytes {
                origin: "configmap test/sinks key counter.wasm".into(),
                bytes,
            },
            ..spec("c4", wasm, Limits::default())
        })
        .await?;
    assert_eq!(fourth, CacheOutcome::Hit(path.clone()));
    // A damaged cache file is replaced, not trusted. (Drop what maps the
    // file first, and replace it by rename as a writer would: truncating a
    // mapped artifact in place is what no writer may do.)
    drop(sink);
    let damaged = dir.path().join("damaged");
    std::fs::write(&damaged, b"garbage")?;
    std::fs::rename(&damaged, &path)?;
    let (_, fifth) = host
        .load_with_outcome(spec("c5", guest_wasm(guests::COUNTER)?, Limits::default()))
        .await?;
    assert_eq!(fifth, CacheOutcome::Stored(path));
    Ok(())
}

/// The mysql sink answers `held` in pages the host asks for (keyset on the
/// uid, its cursor the last uid of a page); the host joins them, and stops
/// an answer over its cap with an error naming the sink.
#[tokio::test]
async fn host_mysql_sink_held_is_paged_and_capped() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let mut sink = host
        .load(SinkSpec {
            settings: vec![("connection".into(), "main".into())],
            ..spec(
                "mysql",
                guest_wasm("kubesink-sink-mysql")?,
                Limits::default(),
            )
        })
        .await?;
    let wants = sink.wants().clone();
    assert_eq!(wants.shape, Shape::State);
    assert_eq!(
        wants.kinds,
        [RecordKind::Job, RecordKind::Pod, RecordKind::Event]
    );
    // 25 pods as they exist (uids p00..p24) and one removed.
    let mut batch: Vec<Entry> = (0..25).map(|i| pod_applied(&format!("p{i:02}"))).collect();
    batch.push(pod("gone"));
    sink.write(&batch).await?;
    sink.set_held_cap(HeldCap {
        page_uids: 4,
        ..HeldCap::default()
    });
    let calls = sink.stats().writes;
    let held = sink.held(RecordKind::Pod).await?;
    let want: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(held, want, "every page, in order, without the removed pod");
    // Six full pages of 4, then one of 1 without a next cursor.
    assert_eq!(sink.stats().writes - calls, 7);
    assert!(sink.held(RecordKind::Event).await?.is_empty());
    sink.set_held_cap(HeldCap {
        page_uids: 4,
        max_uids: 10,
        ..HeldCap::default()
    });
    match sink.held(RecordKind::Pod).await {
        Err(CallError::Fatal(m)) => {
            assert!(
                m.contains("sink 'mysql'") && m.contains("at most 10 uids"),
                "{m}"
            );
        }
        other => panic!("over the cap: {other:?}"),
    }
    assert!(sink.is_live(), "an answer over the cap keeps the instance");
    Ok(())
}

/// The detail of the fault `result` must be, of cause `cause`.
fn fault_detail(result: Result<(), CallError>, cause: FaultCause) -> String {
    match result {
        Err(CallError::Fault { cause: c, detail }) if c == cause => detail,
        other => panic!("expected a {cause:?} fault, got {other:?}"),
    }
}

fn pod_applied(uid: &str) -> Entry {
    records::applied(Record::Pod(records::pod(uid, 42, "Running")))
}

/// The version of the WIT package in the repository's `wit/`.
fn current_version(root: &Path) -> anyhow::Result<String> {
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_dir(root.join("wit"))?;
    Ok(resolve.packages[pkg]
        .name
        .version
        .clone()
        .context("the package has a version")?
        .to_string())
}

/// A component with the exports of world `sink-world` of the WIT package in
/// `wit` (its version in the export names) whose functions all trap: what
/// a sink built against that package looks like to the host's linker.
fn stub_sink(wit: &Path) -> anyhow::Result<Vec<u8>> {
    stub_sink_importing(wit, false)
}

/// [`stub_sink`], also importing `sql`'s `[method]connection.dialect` when
/// `dialect` is true (so the linker checks the `dialect` enum's type).
fn stub_sink_importing(wit: &Path, dialect: bool) -> anyhow::Result<Vec<u8>> {
    stub_component(wit, dialect, false)
}

/// [`stub_sink_importing`]; with `packed`, built against
/// `packed-sink-world`, also exporting `packed`'s `write-packed`.
fn stub_component(wit: &Path, dialect: bool, packed: bool) -> anyhow::Result<Vec<u8>> {
    use wasm_encoder::{
        CodeSection, EntityType, ExportKind, ExportSection, Function, FunctionSection,
        ImportSection, Instruction as I, MemorySection, MemoryType, Module, TypeSection, ValType,
    };
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_dir(wit)?;
    let version = resolve.packages[pkg]
        .name
        .version
        .clone()
        .context("the package has a version")?;
    let world_name = if packed {
        "packed-sink-world"
    } else {
        "sink-world"
    };
    let world = resolve.select_world(&[pkg], Some(world_name))?;
    // held(kind) -> i32 up to 0.1; held(kind, cursor, limit) since 0.2.
    let held_params = if version.major == 0 && version.minor < 2 {
        1
    } else {
        5
    };
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32; 2], [ValType::I32]); // init, write
    types
        .ty()
        .function(vec![ValType::I32; held_params], [ValType::I32]);
    types.ty().function([ValType::I32; 4], [ValType::I32]); // cabi_realloc
    types.ty().function([ValType::I32], [ValType::I32]); // connection.dialect
    let mut imports = ImportSection::new();
    if dialect {
        imports.import(
            &format!("kubesink:sink/sql@{version}"),
            "[method]connection.dialect",
            EntityType::Function(3),
        );
    }
    // Imported functions come first in the index space.
    let first = u32::from(dialect);
    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut exports = ExportSection::new();
    let mut guest_funcs = vec![
        ("sink", "init", 0),
        ("sink", "write", 0),
        ("sink", "held", 1),
    ];
    if packed {
        // `write-packed`, and `write-packed-v2` since 0.2.3: whatever the
        // WIT's `packed` declares.
        let iface = resolve
            .interfaces
            .iter()
            .find(|(_, i)| i.package == Some(pkg) && i.name.as_deref() == Some("packed"))
            .map(|(_, i)| i)
            .context("the package has an interface `packed`")?;
        for name in iface.functions.keys() {
            guest_funcs.push(("packed", name.as_str(), 0));
        }
    }
    for (i, (interface, name, ty)) in guest_funcs.iter().enumerate() {
        funcs.function(*ty);
        let export = format!("kubesink:sink/{interface}@{version}#{name}");
        exports.export(&export, ExportKind::Func, first + i as u32);
    }
    let realloc = first + guest_funcs.len() as u32;
    funcs.function(2);
    exports.export("cabi_realloc", ExportKind::Func, realloc);
    exports.export("memory", ExportKind::Memory, 0);
    for _ in 0..=guest_funcs.len() {
        let mut f = Function::new([]);
        f.instruction(&I::Unreachable).instruction(&I::End);
        code.function(&f);
    }
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut module = Module::new();
    module.section(&types);
    if dialect {
        module.section(&imports);
    }
    module
        .section(&funcs)
        .section(&memories)
        .section(&exports)
        .section(&code);
    sink_component(module.finish(), &resolve, world)
}

/// The component of the core module `bytes`, which exports the functions
/// of `world` in `resolve` (by their canonical ABI names).
pub(crate) fn sink_component(
    mut bytes: Vec<u8>,
    resolve: &wit_parser::Resolve,
    world: wit_parser::WorldId,
) -> anyhow::Result<Vec<u8>> {
    wit_component::embed_component_metadata(
        &mut bytes,
        resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )?;
    wit_component::ComponentEncoder::default()
        .module(&bytes)?
        .validate(true)
        .encode()
}

/// Loads the component `bytes` (module `NAME.wasm`) as sink `name` with
/// `settings`, granted the connection `main`.
fn load_bytes<'h>(
    host: &'h Host,
    name: &str,
    bytes: Vec<u8>,
    settings: Vec<(String, String)>,
) -> impl Future<Output = Result<kubesink_host::SinkInstance, HostError>> + use<'h> {
    host.load(SinkSpec {
        module: ModuleSource::Bytes {
            origin: format!("{name}.wasm"),
            bytes: Arc::new(bytes),
        },
        settings,
        ..spec(name, PathBuf::new(), Limits::default())
    })
}

/// A sink built against kubesink:sink@0.1.0 (the WIT kept in
/// `tests/guests/v0.1/wit`) is refused at load with an error naming the
/// sink, the version it was built against, the one this host runs and what
/// to do; the same component built against this repository's wit/ passes
/// the check (and traps in its `init`, as its functions all do).
#[tokio::test]
async fn host_a_sink_built_against_0_1_is_refused_naming_the_versions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let root = guests::workspace_root();
    let load = |name: &str, bytes: Vec<u8>| load_bytes(&host, name, bytes, Vec::new());
    let old = stub_sink(&root.join("tests/guests/v0.1/wit"))?;
    let err = load("old", old).await.expect_err("a 0.1 sink");
    assert!(
        matches!(&err, HostError::Version { found, .. } if found == "0.1.0"),
        "{err:?}"
    );
    let msg = err.to_string();
    for part in [
        "sink 'old'",
        "old.wasm",
        "built against kubesink:sink@0.1.0",
        "kubesink:sink@0.2.4",
        "rebuild the sink",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    assert!(!err.is_retryable());

    let current = stub_sink(&root.join("wit"))?;
    match load("current", current).await {
        Err(HostError::Init {
            source:
                CallError::Fault {
                    cause: FaultCause::Trap,
                    ..
                },
            ..
        }) => {}
        other => panic!("a 0.2 component is linked and its init runs: {other:?}"),
    }

    // Built against 0.2.0 (before the kafka interface, a compatible
    // change): still linked, its `sink` export found, its init run.
    let older = tempfile::tempdir()?;
    let sink_wit = std::fs::read_to_string(root.join("wit/sink.wit"))?;
    let at_0_2_0 = sink_wit.replace(
        &format!("package kubesink:sink@{};", current_version(&root)?),
        "package kubesink:sink@0.2.0;",
    );
    ensure!(at_0_2_0.contains("@0.2.0;"), "the package line of sink.wit");
    std::fs::write(older.path().join("sink.wit"), at_0_2_0)?;
    match load("older", stub_sink(older.path())?).await {
        Err(HostError::Init {
            source:
                CallError::Fault {
                    cause: FaultCause::Trap,
                    ..
                },
            ..
        }) => {}
        other => panic!("a 0.2.0 component is linked and its init runs: {other:?}"),
    }
    Ok(())
}

/// A sink that exports `kubesink:sink/packed` gets its batches there, one
/// that does not through `write`; one whose `write-packed` has another type
/// than the WIT's is refused at load, naming the sink and the function
/// (not called with a buffer it would misread).
#[tokio::test]
async fn host_a_packed_export_is_used_and_one_of_the_wrong_type_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let root = guests::workspace_root();
    let settings = vec![("connection".to_owned(), "main".to_owned())];
    let load = |name: &str, bytes: Vec<u8>| load_bytes(&host, name, bytes, settings.clone());

    // The bundled mysql sink exports it; a test guest built against
    // `sink-world` does not.
    let mysql = load("mysql", std::fs::read(guest_wasm("kubesink-sink-mysql")?)?).await?;
    ensure!(mysql.takes_packed_batches(), "mysql takes packed batches");
    ensure!(
        mysql.packed_layout() == Some(kubesink_host::PackedLayout::V2),
        "mysql takes layout 2"
    );
    let counter = load(
        "counter",
        std::fs::read(guest_wasm("kubesink-guest-counter")?)?,
    )
    .await?;
    ensure!(!counter.takes_packed_batches(), "counter takes `write`");

    // `write-packed-v2` (the function the host calls since 0.2.3), and
    // `write-packed` of a sink built against 0.2.2, taking a string: the
    // same core signature, another component type.
    for (wit, function) in [
        (root.join("wit"), "write-packed-v2"),
        (root.join("tests/guests/v0.2.2/wit"), "write-packed"),
    ] {
        let wrong = tempfile::tempdir()?;
        let sink_wit = std::fs::read_to_string(wit.join("sink.wit"))?;
        let right = format!("{function}: func(batch: list<u8>) -> result<_, error>;");
        ensure!(sink_wit.contains(&right), "sink.wit declares {right}");
        std::fs::write(
            wrong.path().join("sink.wit"),
            sink_wit.replace(
                &right,
                &format!("{function}: func(batch: string) -> result<_, error>;"),
            ),
        )?;
        let err = match load("misfit", stub_component(wrong.path(), false, true)?).await {
            Err(e) => e,
            Ok(_) => anyhow::bail!("a {function} of the wrong type was accepted"),
        };
        let msg = err.to_string();
        for part in ["sink 'misfit'", &format!("`{function}`"), "list<u8>"] {
            ensure!(msg.contains(part), "{part:?} missing from: {msg}");
        }
        // The same stub with the right type links; its init then traps.
        match load("fit", stub_component(&wit, false, true)?).await {
            Err(HostError::Init {
                source:
                    CallError::Fault {
                        cause: FaultCause::Trap,
                        detail,
                    },
                ..
            }) => ensure!(!detail.contains("write-packed"), "{detail}"),
            other => anyhow::bail!("a packed stub is linked and its init runs: {other:?}"),
        }
    }
    Ok(())
}

/// A sink built against kubesink:sink@0.2.2 exports `packed` with only
/// `write-packed`: this host (0.2.3, which prefers `write-packed-v2`)
/// still links it and hands it every batch in packed layout 1, each
/// change with its strings intact (the guest refuses `write`).
#[tokio::test]
async fn host_a_sink_built_against_0_2_2_takes_packed_layout_1() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let wasm = std::fs::read(guest_wasm("kubesink-guest-packed-v1")?)?;
    let mut sink = load_bytes(&host, "packed-v1", wasm, Vec::new()).await?;
    ensure!(
        sink.packed_layout() == Some(kubesink_host::PackedLayout::V1),
        "a 0.2.2 packed export is used, with layout 1"
    );
    let mut long = records::event("event-2", 43, 2);
    long.message = "ünïcode and a message of more than 127 bytes. ".repeat(4);
    let mut batch = batch();
    batch.push(records::applied(Record::Event(long.clone())));
    sink.write(&batch).await?;
    let conn = host.sql_pools().get("main").context("connection main")?;
    let rows = conn
        .query(
            "SELECT uid, kind, change_kind, text FROM received ORDER BY uid",
            &[],
        )
        .await?;
    let text = |s: &str| Value::Text(s.into());
    let expected = [
        [
            "event-1",
            "event",
            "applied",
            "Back-off restarting failed container",
        ],
        ["event-2", "event", "applied", long.message.as_str()],
        ["job-0", "tombstone", "tombstone", ""],
        ["job-1", "job", "applied", "Running"],
        ["pod-1", "pod", "removed", "tensorflow:2.15"],
    ]
    .map(|row| row.map(text).to_vec());
    ensure!(rows == expected, "rows {rows:?}");
    Ok(())
}

/// A sink built against kubesink:sink@0.2.0 (the WIT kept in
/// `tests/guests/v0.2.0/wit`), importing `connection.dialect`, links with
/// this host (0.2.3; 0.2.1 added `connection.engine` and `engine.postgres`
/// beside the unchanged `dialect`) and its `init` runs. The same component
/// built against a 0.2.0 whose `dialect` enum had gained a `postgres` case
/// is refused at link time: the component model compares enums case by
/// case, which is why PostgreSQL came as a new function and enum
/// (`wit/README.md`).
#[tokio::test]
async fn host_a_sink_built_against_0_2_0_links_and_an_extra_dialect_case_would_not()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let root = guests::workspace_root();
    let load = |name: &str, bytes: Vec<u8>| load_bytes(&host, name, bytes, Vec::new());
    let old_wit = root.join("tests/guests/v0.2.0/wit");
    let old = stub_sink_importing(&old_wit, true)?;
    match load("v020", old).await {
        Err(HostError::Init {
            source:
                CallError::Fault {
                    cause: FaultCause::Trap,
                    ..
                },
            ..
        }) => {}
        other => panic!("a 0.2.0 component importing dialect links and runs init: {other:?}"),
    }

    let widened = tempfile::tempdir()?;
    let text = std::fs::read_to_string(old_wit.join("sink.wit"))?;
    let text = text.replacen(
        "enum dialect {\n        mysql,\n        sqlite,",
        "enum dialect {\n        mysql,\n        sqlite,\n        postgres,",
        1,
    );
    anyhow::ensure!(text.contains("postgres,"), "the dialect enum was widened");
    std::fs::write(widened.path().join("sink.wit"), text)?;
    let err = load("widened", stub_sink_importing(widened.path(), true)?)
        .await
        .expect_err("an enum with another case does not link");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, HostError::World { .. }), "{err:?}");
    assert!(
        msg.contains("sink 'widened'") && msg.contains("enum"),
        "names the sink and the enum: {msg}"
    );
    Ok(())
}
