//! `kubesink-bench`: runs kubesink's benchmarks and writes
//! `docs/benchmarks.md`. Started by `just bench` (`tests/scripts/bench.sh`,
//! which builds the binaries and guests and runs the criterion bench
//! first). Starts what it needs itself: MariaDB (`tests/scripts/mariadb.sh`),
//! the SLS emulator (in process) and a control plane (etcd +
//! kube-apiserver).
//!
//! `BENCH_SCALE` (default 1) scales the data set (1 = 10k jobs, 100k pods,
//! 1M events), the pods held for the memory figure and the latency run;
//! `BENCH_ONLY=mysql,sls,calls,memory,latency,idle,livecpu,restart` picks scenarios;
//! the rows of scenarios not run are kept from the report already there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use kubesink_bench::report::{Figure, Report, Target};
use kubesink_bench::{calls, data, live, mysql, procfs, restart, sls};
use kubesink_tests::guests::{guest_wasm, workspace_root};
use kubesink_tests::mariadb;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "kubesink-bench",
    about = "Runs kubesink's benchmarks and writes docs/benchmarks.md"
)]
struct Args {
    /// Scale of the data set and of the live runs (1 = the sizes).
    #[arg(long, env = "BENCH_SCALE", default_value_t = 1.0)]
    scale: f64,
    /// Scenarios to run (comma-separated): mysql (= wasm, native, pipeline,
    /// ceiling), replay, sls, calls, memory, latency, idle, livecpu, restart.
    #[arg(
        long,
        env = "BENCH_ONLY",
        value_delimiter = ',',
        default_value = "mysql,replay,sls,calls,memory,latency,idle,livecpu,restart"
    )]
    only: Vec<String>,
    /// Window of the idle scenario in seconds (default: 300 × scale, at least 60).
    #[arg(long, env = "BENCH_IDLE_SECS")]
    idle_secs: Option<u64>,
    /// Settling time of the idle scenario before its window, seconds.
    #[arg(long, env = "BENCH_IDLE_SETTLE_SECS", default_value_t = 60)]
    idle_settle_secs: u64,
    /// Pods for the memory figure (default: 100000 × scale, at least 2000).
    #[arg(long, env = "BENCH_MEMORY_PODS")]
    memory_pods: Option<u64>,
    /// Event rate of the latency run, events/s.
    #[arg(long, env = "BENCH_RATE", default_value_t = 500)]
    rate: u64,
    /// Duration of the latency run in seconds (default: 60 × scale, at least 10).
    #[arg(long, env = "BENCH_LATENCY_SECS")]
    latency_secs: Option<u64>,
    /// Worker counts of the pipeline runs of the mysql sink (`workers:`).
    #[arg(
        long,
        env = "BENCH_WORKERS",
        value_delimiter = ',',
        default_value = "1,2,4"
    )]
    workers: Vec<usize>,
    /// Where to write the report (relative to the workspace).
    #[arg(long, env = "BENCH_OUT", default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// The command line to print in the report.
    #[arg(long, env = "BENCH_COMMAND", default_value = "just bench")]
    command: String,
}

fn cache_dir() -> PathBuf {
    std::env::var_os("KUBESINK_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kubesink")))
        .unwrap_or_else(|| workspace_root().join("target/kubesink-cache"))
        .join("bench")
}

/// A binary built next to this one (`target/<profile>/NAME`).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating kubesink-bench")?;
    let path = me.with_file_name(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build it first (`cargo build -p kubesink -p kubesink-tests --bins`; tests/scripts/bench.sh does)",
        path.display()
    );
    Ok(path)
}

fn step(what: &str) {
    eprintln!("\n==> {what}");
}

struct Bench {
    args: Args,
    report: Report,
    cache: PathBuf,
    batches: Option<Vec<Vec<kubesink_normalize::record::Entry>>>,
    stream: Option<PathBuf>,
}

impl Bench {
    fn wants(&self, s: &str) -> bool {
        self.args.only.iter().any(|o| o.trim() == s)
    }

    fn record(&mut self, name: &str, result: anyhow::Result<()>) {
        if let Err(e) = result {
            let text = format!("{e:#}");
            eprintln!("!! {name} failed: {text}");
            self.report.failures.push((name.to_owned(), text));
        }
    }

    fn shape(&self) -> data::Shape {
        data::Shape::scaled(self.args.scale)
    }

    fn stream(&mut self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.stream {
            return Ok(p.clone());
        }
        let shape = self.shape();
        step(&format!(
            "data: {} jobs, {} pods, {} events (kubesink-gen)",
            shape.jobs,
            shape.pods(),
            shape.events
        ));
        let started = Instant::now();
        let path = data::ensure_stream(&sibling("kubesink-gen")?, &self.cache, shape)?;
        eprintln!(
            "  {} ({:.1} s)",
            path.display(),
            started.elapsed().as_secs_f64()
        );
        self.stream = Some(path.clone());
        Ok(path)
    }

    fn batches(&mut self) -> anyhow::Result<&[Vec<kubesink_normalize::record::Entry>]> {
        if self.batches.is_none() {
            let path = self.stream()?;
            step("normalizing the stream into batches of 500");
            let started = Instant::now();
            let batches = data::load(&path, 500)?;
            let n: usize = batches.iter().map(Vec::len).sum();
            let secs = started.elapsed().as_secs_f64();
            eprintln!("  {n} entries in {secs:.1} s");
            self.report.figures.push(Figure::new(
                "parse + normalize (generated watch stream → entries)",
                n as f64 / secs.max(1e-9),
                "records/s",
                Target::None,
                "the replay's decoding (`kubesink::source::replay::watch_event_entry`: each object decoded once, from its text into the typed form) and kubesink_normalize, on one thread, for context",
            ));
            self.batches = Some(batches);
        }
        Ok(self.batches.as_deref().unwrap_or_default())
    }

    async fn mysql(&mut self) -> anyhow::Result<()> {
        let wasm = guest_wasm("kubesink-sink-mysql")?;
        // Compiled components persist between runs (keyed by the engine's
        // settings and the host CPU), so no run pays for Cranelift.
        let components = self.cache.join("components");
        let batches = std::mem::take(&mut self.batches);
        let batches = match batches {
            Some(b) => b,
            None => {
                self.batches()?;
                self.batches.take().unwrap_or_default()
            }
        };
        let records: usize = batches.iter().map(Vec::len).sum();

        let all = self.wants("mysql");
        let mut rows_seen: Option<[i64; 3]> = None;
        let mut check_rows = |label: &str, rows: [i64; 3]| -> anyhow::Result<()> {
            if let Some(prev) = rows_seen {
                anyhow::ensure!(
                    prev == rows,
                    "{label} left different row counts than the sink before it: {rows:?} vs {prev:?}"
                );
            }
            rows_seen = Some(rows);
            Ok(())
        };
        // Wasm and native alternate (wasm, native, native, wasm, twice)
        // when both run, so that a drift of the machine's speed during the
        // runs (it moves by 10-20 % here) falls on both sides alike; each
        // side's figure is its records over its summed write time. Two
        // pairs were not enough: one run of a side could read 20 % below
        // the other on the same statements, and the ratio moved between
        // 0.88 and 1.01 from one bench run to the next. An uncounted
        // native run goes first: the first run against a freshly started
        // MariaDB was always the slowest (its server CPU 25 s against
        // 20-23 s for the others), a warm-up the alternation does not cancel
        // because it falls on one side only.
        let want_wasm = all || self.wants("wasm");
        let want_native = all || self.wants("native");
        let order: &[Option<bool>] = match (want_wasm, want_native) {
            (true, true) => &[
                None,
                Some(true),
                Some(false),
                Some(false),
                Some(true),
                Some(true),
                Some(false),
                Some(false),
                Some(true),
            ],
            (true, false) => &[Some(true)],
            (false, true) => &[Some(false)],
            (false, false) => &[],
        };
        let (mut w_runs, mut n_runs) = (Vec::new(), Vec::new());
        for &run in order {
            let Some(is_wasm) = run else {
                step("warm-up: mysql sink (native) → MariaDB, not counted");
                let (_, _, rows) =
                    measured("bench_warmup", async |db| mysql::native(db, &batches).await).await?;
                check_rows("warm-up", rows)?;
                continue;
            };
            if is_wasm {
                step(&format!("mysql sink (wasm) → MariaDB: {records} records"));
                let (t, server, rows) = measured("bench_wasm", async |db| {
                    mysql::wasm(db, &wasm, &components, &batches).await
                })
                .await?;
                check_rows("wasm", rows)?;
                w_runs.push((t, server));
            } else {
                step("mysql sink (native) → MariaDB");
                let (t, server, rows) =
                    measured("bench_native", async |db| mysql::native(db, &batches).await).await?;
                check_rows("native", rows)?;
                n_runs.push((t, server));
            }
        }
        let w = combine_runs(&w_runs);
        let n = combine_runs(&n_runs);
        let mut piped = Vec::new();
        if all || self.wants("pipeline") {
            for &workers in &self.args.workers {
                step(&format!(
                    "kubesink's pipeline, {workers} worker(s) of the mysql sink (wasm) → MariaDB"
                ));
                settle_server().await?;
                let db = mariadb::fresh_database("bench_pipeline").await?;
                let cpu = mysqld_cpu();
                let t = mysql::pipeline(&db, &wasm, &components, &batches, workers).await?;
                let server = cpu_since(cpu);
                let rows = mysql::row_counts(&db).await?;
                eprintln!(
                    "  {:.0} records/s; mysqld CPU {server:.2} s; rows {rows:?}",
                    t.per_sec()
                );
                check_rows(&format!("pipeline ({workers} workers)"), rows)?;
                db.drop_database().await?;
                piped.push((workers, t, server));
            }
        }
        let mut c = None;
        if all || self.wants("ceiling") {
            step("plain sqlx batched upserts → MariaDB (ceiling)");
            let (t, server, _) = measured("bench_ceiling", async |db| {
                mysql::ceiling(db, &batches).await
            })
            .await?;
            c = Some((t, server));
        }
        let rows = rows_seen.unwrap_or_default();
        let rows_note = format!(
            "{} batches of ≤500 entries; {} job, {} pod, {} event rows",
            batches.len(),
            rows[0],
            rows[1],
            rows[2]
        );
        if let Some((t, server)) = &w {
            self.report.figures.push(Figure::new(
                "mysql sink, **wasm** (component in the host) → MariaDB",
                t.per_sec(),
                "records/s",
                Target::AtLeast(50_000.0),
                format!("`SinkInstance::write`, write time only; MariaDB: {server}; {rows_note}"),
            ));
        }
        if let Some((t, server)) = &n {
            self.report.figures.push(Figure::new(
                "mysql sink, **native** (same logic, host's sql directly) → MariaDB",
                t.per_sec(),
                "records/s",
                Target::None,
                format!("`MysqlSink<NativeDb>` over `kubesink_host::sql::SqlConn`, incl. moving records into the sink model; MariaDB: {server}"),
            ));
        }
        if let (Some((wt, _)), Some((nt, _))) = (&w, &n) {
            self.report.figures.push(Figure::new(
                "ratio wasm / native",
                wt.per_sec() / nt.per_sec().max(1e-9),
                "",
                Target::AtLeast(0.95),
                "same batches, same database server, fresh database each; after an uncounted native warm-up, runs alternate wasm, native, native, wasm, twice, each side's write time summed",
            ));
        }
        for (workers, t, server) in &piped {
            self.report.figures.push(Figure::new(
                &format!("mysql sink (wasm) through kubesink's pipeline, **{workers} worker(s)** → MariaDB"),
                t.per_sec(),
                "records/s",
                Target::AtLeast(50_000.0),
                format!(
                    "`Pipeline::send` of every entry to the last delivered: queue, batches of 500, `workers: {workers}` (objects shared out by uid, one connection each), `coalesce: false`; MariaDB: {server:.1} s of CPU"
                ),
            ));
        }
        if let Some((t, server)) = c {
            let vs = w.as_ref().map_or(String::new(), |(wt, _)| {
                format!(
                    "; wasm reaches {:.0}% of it",
                    100.0 * wt.per_sec() / t.per_sec().max(1e-9)
                )
            });
            self.report.figures.push(Figure::new(
                "ceiling: plain batched sqlx upserts of the same rows → MariaDB",
                t.per_sec(),
                "records/s",
                Target::None,
                format!(
                    "multi-row `INSERT … ON DUPLICATE KEY UPDATE` (statement shapes as the sink's), one transaction per batch, no version guards, no collapse; MariaDB: {server}{vs}"
                ),
            ));
        }
        self.batches = Some(batches);
        Ok(())
    }

    /// The whole binary: `kubesink replay` of the stream file.
    async fn replay(&mut self) -> anyhow::Result<()> {
        let path = self.stream()?;
        let kubesink = sibling("kubesink")?;
        let db = mariadb::fresh_database("bench_replay").await?;
        step("kubesink replay (the binary: parse, normalize, pipeline, wasm sink) → MariaDB");
        let dir = tempfile::tempdir()?;
        let mut child = std::process::Command::new(&kubesink)
            .args([
                "--meta-storage",
                "mysql",
                "--event-storage",
                "mysql",
                "replay",
            ])
            .arg(&path)
            .envs(db.kubedl_env())
            .env("KUBESINK_CACHE_DIR", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", kubesink.display()))?;
        let sampler = procfs::PeakSampler::start(child.id(), Duration::from_millis(20));
        let started = Instant::now();
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read as _;
            tokio::task::block_in_place(|| e.read_to_string(&mut stderr))?;
        }
        let status = tokio::task::block_in_place(|| child.wait())?;
        let wall = started.elapsed().as_secs_f64();
        let peak = sampler.finish();
        anyhow::ensure!(
            status.success(),
            "kubesink replay failed ({status}):\n{stderr}"
        );
        let line = stderr
            .lines()
            .find(|l| l.starts_with("replayed "))
            .context("kubesink replay printed no summary")?;
        eprintln!("  {line}");
        let rate = line
            .rsplit_once('(')
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .context("no records/s in the replay summary")?;
        let rows = mysql::row_counts(&db).await?;
        db.drop_database().await?;
        self.report.figures.push(Figure::new(
            "`kubesink replay` (whole binary) → MariaDB",
            rate,
            "records/s",
            Target::AtLeast(50_000.0),
            format!(
                "as it reports; KubeDL's switches, no config file (default workers: one per core, at most 4); wall {wall:.1} s incl. start-up; peak RSS {:.0} MB; rows {rows:?}",
                peak as f64 / 1e6
            ),
        ));
        Ok(())
    }

    async fn sls(&mut self) -> anyhow::Result<()> {
        let wasm = guest_wasm("kubesink-sink-sls")?;
        let cache = tempfile::tempdir()?;
        self.batches()?;
        let batches = self.batches.take().unwrap_or_default();
        step("sls sink (wasm) → SLS emulator");
        let result = sls::run(&wasm, cache.path(), &batches).await;
        self.batches = Some(batches);
        let s = result?;
        eprintln!(
            "  {:.0} events/s, {:.1} MB/s raw, {} requests",
            s.events_per_sec(),
            s.mb_per_sec(),
            s.requests
        );
        self.report.figures.push(Figure::new(
            "sls sink (wasm) → SLS emulator",
            s.events_per_sec(),
            "events/s",
            Target::AtLeast(100_000.0),
            s.note(),
        ));
        self.report.figures.push(Figure::new(
            "sls sink (wasm) → SLS emulator, raw protobuf",
            s.mb_per_sec(),
            "MB/s",
            Target::None,
            "`x-log-bodyrawsize` summed over write time",
        ));
        Ok(())
    }

    fn calls(&mut self) -> anyhow::Result<()> {
        // Criterion writes under the cargo target directory.
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace_root().join("target"), PathBuf::from)
            .join("criterion");
        let empty = calls::mean_ns(&dir, calls::GROUP, "empty_batch").context(
            "no criterion results: run `cargo bench -p kubesink-bench --bench host_call` first (bench.sh does)",
        )?;
        self.report.figures.push(Figure::new(
            "host→guest call, empty batch (criterion)",
            empty / 1000.0,
            "µs",
            Target::None,
            "`SinkInstance::write(&[])` on the mysql component (`pods`, `events` off, so no SQL)",
        ));
        for n in [100usize, 1000] {
            let name = format!("events_{n}");
            let Some(batch) = calls::mean_ns(&dir, calls::GROUP, &name) else {
                continue;
            };
            self.report.figures.push(Figure::new(
                &format!("host→guest cost per record, batch of {n} events (criterion)"),
                calls::per_record_ns(empty, batch, n) / 1000.0,
                "µs",
                // Issue 18: the sandbox boundary costs little.
                Target::AtMost(0.5),
                "(batch − empty) / n: the host packs the batch (`write-packed-v2`, packed layout 2), wasmtime copies it in, the guest decodes it into the sink's model",
            ));
        }
        Ok(())
    }

    /// A log sink's duplicates per restart with 10k retained events (× scale).
    async fn restart(&mut self) -> anyhow::Result<()> {
        let kubesink = sibling("kubesink")?;
        let wasm = guest_wasm("kubesink-sink-sls")?;
        let events = ((10_000.0 * self.args.scale) as usize).max(100);
        step(&format!(
            "restart: {events} events through the sls sink, then restarts"
        ));
        let cluster = kubesink_tests::cluster::start().await?;
        let emulator =
            kubesink_tests::sls::start(kubesink_tests::sls::EmulatorConfig::default()).await?;
        let d =
            restart::duplicates_per_restart(&kubesink, &wasm, &cluster, &emulator, events).await?;
        let note = format!(
            "{events} events held by the API server, delivered by `kubesink run` through the sls sink into the SLS emulator; then SIGTERM and a new start"
        );
        self.report.figures.push(Figure::new(
            "log sink: records delivered again per restart, without a checkpoint (`--no-checkpoint`, as before)",
            d.without as f64,
            "records",
            Target::None,
            note.clone(),
        ));
        self.report.figures.push(Figure::new(
            "log sink: records delivered again per restart, with the checkpoint (default)",
            d.with as f64,
            "records",
            Target::None,
            note,
        ));
        Ok(())
    }

    async fn live(&mut self, memory: bool, latency: bool) -> anyhow::Result<()> {
        let kubesink = sibling("kubesink")?;
        let wasm = guest_wasm("kubesink-sink-mysql")?;
        step("control plane (etcd + kube-apiserver)");
        let cluster = kubesink_tests::cluster::start().await?;
        let client = cluster.client();
        let db = mariadb::fresh_database("bench_live").await?;
        let pool = db.connect().await?;
        let dir = tempfile::tempdir()?;
        let job_uid = live::create_job(&client).await?;
        step("kubesink run");
        let mut ks = live::start(&kubesink, &wasm, &cluster, &db, dir.path())?;
        live::wait_count(
            &pool,
            &mut ks,
            "SELECT COUNT(*) FROM job_info",
            1,
            Duration::from_secs(120),
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss0, _) = live::memory(&mut ks)?;
        let base = live::rollup(&mut ks)?;
        let guest0 = live::guest_memory(&mut ks);
        eprintln!(
            "  running, RSS {:.1} MB with 1 job ({:.1} MB anonymous, of which {:.1} MB the guest's linear memory; {:.1} MB file-backed)",
            rss0 as f64 / 1e6,
            base.anon as f64 / 1e6,
            guest0 as f64 / 1e6,
            base.file as f64 / 1e6
        );
        let pods = self
            .args
            .memory_pods
            .unwrap_or_else(|| ((100_000.0 * self.args.scale) as u64).max(2000));
        if memory {
            // 1. Pods created while kubesink watches: one watch event each.
            step(&format!(
                "memory: creating {pods} pods while kubesink watches"
            ));
            let took = live::create_pods(&client, &job_uid, 0, pods).await?;
            let rate = pods as f64 / took.as_secs_f64().max(1e-9);
            eprintln!("  {pods} pods in {:.1} s ({rate:.0}/s)", took.as_secs_f64());
            let caught_up = live::wait_count(
                &pool,
                &mut ks,
                "SELECT COUNT(*) FROM replica_info",
                pods as i64,
                Duration::from_secs(600),
            )
            .await?;
            live::wait_settled(&mut ks, pods + 1, Duration::from_secs(600)).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (rss_w, hwm_w) = live::memory(&mut ks)?;
            let guest_w = live::guest_memory(&mut ks);
            let slope_w = (rss_w.saturating_sub(rss0)) as f64 / pods as f64;
            eprintln!(
                "  watched: RSS {:.1} MB (peak {:.1} MB; guest linear memory {:.1} MB) holding {pods} pods; {slope_w:.0} bytes/pod",
                rss_w as f64 / 1e6,
                hwm_w as f64 / 1e6,
                guest_w as f64 / 1e6,
            );
            let pod_bytes = live::pod_json_bytes(&client, "load-0").await?;
            // 2. The hard case: kubesink (re)started while the pods exist
            // lists them all and reconciles them with what the sink holds
            // (the same database, so it holds them all).
            step(&format!(
                "memory: restarting kubesink with {pods} pods in the cluster (list + reconcile)"
            ));
            drop(ks);
            ks = live::start(&kubesink, &wasm, &cluster, &db, dir.path())?;
            let relisted = live::wait_settled(&mut ks, pods + 1, Duration::from_secs(900)).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (rss_r, hwm_r) = live::memory(&mut ks)?;
            let roll_r = live::rollup(&mut ks)?;
            let guest_r = live::guest_memory(&mut ks);
            let slope_r = (rss_r.saturating_sub(rss0)) as f64 / pods as f64;
            let peak_slope_r = (hwm_r.saturating_sub(rss0)) as f64 / pods as f64;
            eprintln!(
                "  relisted in {:.1} s: RSS {:.1} MB ({:.1} MB anonymous, guest linear memory {:.1} MB), peak {:.1} MB; {slope_r:.0} bytes/pod held, {peak_slope_r:.0} bytes/pod at the peak",
                relisted.as_secs_f64(),
                rss_r as f64 / 1e6,
                roll_r.anon as f64 / 1e6,
                guest_r as f64 / 1e6,
                hwm_r as f64 / 1e6,
            );
            let mb = |b: u64| b as f64 / 1e6;
            let measured = pods >= 100_000;
            let peak = hwm_w.max(hwm_r);
            // Extrapolated from the steeper of the two peaks.
            let at_100k = rss0 as f64
                + peak_slope_r.max((hwm_w.saturating_sub(rss0)) as f64 / pods as f64) * 100_000.0;
            self.report.figures.push(Figure::new(
                "kubesink resident memory holding 100k pods",
                if measured { mb(peak) } else { at_100k / 1e6 },
                "MB",
                Target::AtMost(150.0),
                if measured {
                    format!(
                        "peak RSS (VmHWM) of `kubesink run`, the larger of: {pods} pods created while it watched (peak {:.1} MB, {:.1} MB after) and restarted with them existing (peak {:.1} MB, {:.1} MB after); {:.1} MB with none",
                        mb(hwm_w),
                        mb(rss_w),
                        mb(hwm_r),
                        mb(rss_r),
                        mb(rss0)
                    )
                } else {
                    format!(
                        "**extrapolated** from peaks measured with {pods} pods ({:.1} MB created while watching, {:.1} MB restarted with them existing): {:.1} MB with none + the steeper peak slope × 100k",
                        mb(hwm_w),
                        mb(hwm_r),
                        mb(rss0)
                    )
                },
            ));
            self.report.figures.push(Figure::new(
                "kubesink restarted with the pods existing: peak RSS",
                mb(hwm_r),
                "MB",
                Target::None,
                format!(
                    "{pods} pods listed and reconciled with the {pods} the sink holds; settled after {:.1} s at RSS {:.1} MB ({:.1} MB anonymous, of which {:.1} MB the guest's linear memory; {:.1} MB file-backed)",
                    relisted.as_secs_f64(),
                    mb(rss_r),
                    mb(roll_r.anon),
                    mb(guest_r),
                    mb(roll_r.file)
                ),
            ));
            self.report.figures.push(Figure::new(
                "kubesink with no pods (baseline RSS)",
                mb(rss0),
                "MB",
                Target::None,
                format!(
                    "one job delivered: {:.1} MB anonymous (heap, stacks, and {:.1} MB the guest's linear memory), {:.1} MB file-backed (binary, libraries, the mapped compiled component)",
                    mb(base.anon),
                    mb(guest0),
                    mb(base.file)
                ),
            ));
            self.report.figures.push(Figure::new(
                "memory per pod, created while watching",
                slope_w,
                "bytes",
                Target::None,
                format!(
                    "(RSS after delivering them − RSS with none) / {pods} pods; peak {:.1} MB; the guest's linear memory {:.1} MB (from {:.1} MB)",
                    mb(hwm_w),
                    mb(guest_w),
                    mb(guest0)
                ),
            ));
            self.report.figures.push(Figure::new(
                "memory per pod, listed at start (peak)",
                peak_slope_r,
                "bytes",
                Target::None,
                format!(
                    "(peak RSS of the restarted kubesink − RSS with none) / {pods} pods; {slope_r:.0} bytes/pod once settled"
                ),
            ));
            self.report.figures.push(Figure::new(
                "creating pods in the test API server (for context)",
                rate,
                "pods/s",
                Target::None,
                format!(
                    "{} concurrent creates of pods of {pod_bytes} bytes of JSON as stored (one container, labels, owner reference, status, managedFields); kubesink delivered the last one {:.1} s after",
                    live::CREATE_CONCURRENCY,
                    caught_up.as_secs_f64()
                ),
            ));
        }
        if latency {
            let secs = self
                .args
                .latency_secs
                .unwrap_or_else(|| ((60.0 * self.args.scale) as u64).max(10));
            let total = (self.args.rate * secs) as usize;
            step(&format!(
                "latency: {total} events at {}/s, API server → event_info row",
                self.args.rate
            ));
            let l = live::latency(&client, &pool, &mut ks, self.args.rate, total).await?;
            eprintln!(
                "  p50 {:.3} s, p99 {:.3} s, max {:.3} s; {} of {} seen; rate achieved {:.0}/s",
                l.p50, l.p99, l.max, l.seen, l.sent, l.achieved_rate
            );
            anyhow::ensure!(
                l.seen == l.sent,
                "only {} of {} events arrived within 30 s of the last create",
                l.seen,
                l.sent
            );
            let note = format!(
                "{} events at {}/s (achieved {:.0}/s); from just before the create request to the row, polled every {} ms; max {:.3} s; default batch max_delay 200 ms",
                l.sent,
                self.args.rate,
                l.achieved_rate,
                live::POLL.as_millis(),
                l.max
            );
            self.report.figures.push(Figure::new(
                "end-to-end latency p50",
                l.p50,
                "s",
                Target::None,
                note.clone(),
            ));
            self.report.figures.push(Figure::new(
                "end-to-end latency p99",
                l.p99,
                "s",
                Target::AtMost(1.0),
                note,
            ));
        }
        drop(ks);
        pool.close().await;
        db.drop_database().await?;
        drop(cluster);
        Ok(())
    }
}

/// Runs `write` on a fresh database `name` and drops it: the timing, what
/// the server spent (its CPU time, statement prepares and executes, as a
/// note for the report) and the row counts left, each printed.
/// Runs of one side of the mysql comparison as one figure: their records
/// over their summed write time, the first run's server note, and each
/// run's rate when there were several.
fn combine_runs(runs: &[(mysql::Throughput, String)]) -> Option<(mysql::Throughput, String)> {
    let (_, first) = runs.first()?;
    let total = mysql::Throughput {
        records: runs.iter().map(|(t, _)| t.records).sum(),
        elapsed: runs.iter().map(|(t, _)| t.elapsed).sum(),
    };
    let note = if runs.len() > 1 {
        let rates: Vec<String> = runs
            .iter()
            .map(|(t, _)| format!("{:.0}", t.per_sec()))
            .collect();
        format!(
            "{first}; {} runs: {} records/s",
            runs.len(),
            rates.join(", ")
        )
    } else {
        first.clone()
    };
    Some((total, note))
}

async fn measured(
    name: &str,
    write: impl AsyncFnOnce(&mariadb::TestDb) -> anyhow::Result<mysql::Throughput>,
) -> anyhow::Result<(mysql::Throughput, String, [i64; 3])> {
    settle_server().await?;
    let db = mariadb::fresh_database(name).await?;
    let cpu = mysqld_cpu();
    let counters = mysql::statement_counters(&db).await?;
    let t = write(&db).await?;
    let server = cpu_since(cpu);
    let after = mysql::statement_counters(&db).await?;
    let prepares = after.0.saturating_sub(counters.0);
    let executes = after.1.saturating_sub(counters.1);
    let rows = mysql::row_counts(&db).await?;
    eprintln!(
        "  {:.0} records/s; mysqld CPU {server:.2} s; {prepares} prepares, {executes} executes; rows {rows:?}",
        t.per_sec()
    );
    db.drop_database().await?;
    let server =
        format!("{server:.1} s of CPU, {prepares} statement prepares, {executes} executes");
    Ok((t, server, rows))
}

/// Waits until MariaDB has written out its dirty pages and purged its undo
/// history, what an earlier run left it doing in the background, so that
/// each run starts with the server in the same state and pays for no other
/// run's writes. Without it, MariaDB's CPU for the same statements moved
/// between 21 and 25 s from run to run. Flushes eagerly meanwhile
/// (`innodb_max_dirty_pages_pct = 0`), then restores the setting; gives up
/// after three minutes, saying what is left.
async fn settle_server() -> anyhow::Result<()> {
    use sqlx::Connection as _;
    const QUIET: i64 = 64;
    let url = mariadb::server_url()?;
    let mut conn = sqlx::MySqlConnection::connect(&url)
        .await
        .context("connecting to MariaDB to let it settle")?;
    let pct: f64 = sqlx::query_scalar("SELECT CAST(@@GLOBAL.innodb_max_dirty_pages_pct AS DOUBLE)")
        .fetch_one(&mut conn)
        .await?;
    sqlx::query("SET GLOBAL innodb_max_dirty_pages_pct = 0")
        .execute(&mut conn)
        .await?;
    let started = Instant::now();
    // Errors end the wait but not before the setting is restored.
    let settled = loop {
        let counts = sqlx::query_as::<_, (i64, i64)>(
            "SELECT \
               (SELECT `COUNT` FROM information_schema.INNODB_METRICS WHERE NAME = 'buffer_pool_pages_dirty'), \
               (SELECT `COUNT` FROM information_schema.INNODB_METRICS WHERE NAME = 'trx_rseg_history_len')",
        )
        .fetch_one(&mut conn)
        .await;
        let (dirty, history) = match counts {
            Ok(c) => c,
            Err(e) => break Err(anyhow::Error::new(e).context("reading MariaDB's InnoDB metrics")),
        };
        if dirty < QUIET && history < QUIET {
            eprintln!(
                "  (MariaDB settled in {:.1} s)",
                started.elapsed().as_secs_f64()
            );
            break Ok(());
        }
        if started.elapsed() > Duration::from_secs(180) {
            break Err(anyhow::anyhow!(
                "MariaDB did not settle within 180 s: {dirty} dirty pages, {history} undo logs to purge"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET GLOBAL innodb_max_dirty_pages_pct = {pct}"
    )))
    .execute(&mut conn)
    .await?;
    settled
}

/// CPU seconds (user + system) the MariaDB server has used so far, from
/// its pid file (`tests/scripts/mariadb.sh` layout) and `/proc`.
fn mysqld_cpu() -> Option<f64> {
    let pid_file = match std::env::var_os("BENCH_MYSQLD_PID_FILE") {
        Some(f) => PathBuf::from(f),
        None => std::env::var_os("KUBESINK_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kubesink")))?
            .join("mariadb/mysqld.pid"),
    };
    let pid = std::fs::read_to_string(pid_file).ok()?;
    procfs::cpu_seconds(pid.trim().parse().ok()?)
}

/// CPU seconds MariaDB used since `before` (0 when unknown).
fn cpu_since(before: Option<f64>) -> f64 {
    match (before, mysqld_cpu()) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    }
}

/// One value the server answers `sql` with (from a scratch database).
async fn server_value<T>(sql: &'static str) -> Option<T>
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::MySql> + sqlx::Type<sqlx::MySql>,
{
    let db = mariadb::fresh_database("bench_server").await.ok()?;
    let pool = db.connect().await.ok()?;
    let v: Option<T> = sqlx::query_scalar(sql).fetch_one(&pool).await.ok();
    pool.close().await;
    let _ = db.drop_database().await;
    v
}

async fn mariadb_version() -> Option<String> {
    server_value("SELECT VERSION()").await
}

/// The running server's `innodb_buffer_pool_size`, in bytes.
async fn buffer_pool_size() -> Option<u64> {
    server_value("SELECT @@innodb_buffer_pool_size").await
}

/// `--innodb-buffer-pool-size=N[KMG]` of server options, in bytes.
fn buffer_pool_option(args: &str) -> Option<u64> {
    let value = args
        .split_whitespace()
        .find_map(|a| a.strip_prefix("--innodb-buffer-pool-size="))?;
    let (digits, unit) = match value.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => value.split_at(i),
        None => (value, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Refuses a server that runs with another buffer pool than the bench's
/// options ask: `mariadb.sh start` keeps a server already running on the
/// port, e.g. one started with the tests' small pool, whose figures would
/// not compare.
async fn check_server_options() -> anyhow::Result<()> {
    let Ok(args) = std::env::var("BENCH_MARIADB_ARGS") else {
        return Ok(());
    };
    let (Some(want), Some(have)) = (buffer_pool_option(&args), buffer_pool_size().await) else {
        return Ok(());
    };
    anyhow::ensure!(
        want == have,
        "the MariaDB the bench reached runs with innodb_buffer_pool_size {} MiB, not the {} MiB of BENCH_MARIADB_ARGS (`{}`): it was started before with other options; stop it (tests/scripts/mariadb.sh stop, with the bench's KUBESINK_CACHE and port) and run the bench again",
        have >> 20,
        want >> 20,
        args.trim()
    );
    Ok(())
}

fn rustc_version() -> String {
    std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "rustc (unknown)".into())
}

fn write_report(out: &Path, report: &Report) -> anyhow::Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, report.render()).with_context(|| format!("writing {}", out.display()))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kubesink_tests::cluster::install_crypto_provider();
    let root = workspace_root();
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    step("MariaDB");
    let server = tokio::task::spawn_blocking(mariadb::server_url).await??;
    let _ = server;
    check_server_options().await?;
    let mut versions = vec![("kubesink".to_owned(), env!("CARGO_PKG_VERSION").to_owned())];
    versions.push((
        "rustc".into(),
        rustc_version().trim_start_matches("rustc ").to_owned(),
    ));
    for p in ["wasmtime", "sqlx", "kube", "tokio"] {
        if let Some(v) = procfs::locked_version(&root, p) {
            versions.push((p.into(), v));
        }
    }
    if let Some(mut v) = mariadb_version().await {
        if let Ok(args) = std::env::var("BENCH_MARIADB_ARGS") {
            v = format!("{v} (server options `{}`, others default)", args.trim());
        }
        versions.push(("MariaDB".into(), v));
    }
    let profile = if cfg!(debug_assertions) {
        "dev profile (workspace crates opt-level 0, dependencies opt-level 2)"
    } else {
        "optimized"
    };
    let profile = match std::env::var("BENCH_PROFILE") {
        Ok(name) => format!("cargo profile `{name}` ({profile})"),
        Err(_) => profile.to_owned(),
    };
    versions.push(("build".into(), profile));
    let shape = data::Shape::scaled(args.scale);
    let report = Report {
        machine: procfs::machine(),
        versions,
        command: args.command.clone(),
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        data: format!(
            "`kubesink-gen --jobs {} --pods-per-job {} --events {}` (scale {}), replayed as entries",
            shape.jobs, shape.pods_per_job, shape.events, args.scale
        ),
        appendix: std::fs::read_to_string(root.join("tests/bench/profile.md")).unwrap_or_default(),
        ..Report::default()
    };
    let mut bench = Bench {
        args,
        report,
        cache,
        batches: None,
        stream: None,
    };
    let started = Instant::now();
    if bench.wants("load") {
        // Only normalize the data set: the baseline of instruction-count
        // profiles (`valgrind --tool=callgrind kubesink-bench`).
        let r = bench.batches().map(|_| ());
        bench.record("load", r);
    }
    if ["mysql", "wasm", "native", "pipeline", "ceiling"]
        .iter()
        .any(|s| bench.wants(s))
    {
        let r = bench.mysql().await;
        bench.record("mysql", r);
    }
    if bench.wants("replay") {
        let r = bench.replay().await;
        bench.record("replay", r);
    }
    if bench.wants("sls") {
        let r = bench.sls().await;
        bench.record("sls", r);
    }
    bench.batches = None;
    if bench.wants("calls") {
        let r = bench.calls();
        bench.record("calls", r);
    }
    let (memory, latency) = (bench.wants("memory"), bench.wants("latency"));
    if memory || latency {
        let r = bench.live(memory, latency).await;
        bench.record("memory/latency", r);
    }
    if bench.wants("idle") {
        let window = bench
            .args
            .idle_secs
            .unwrap_or_else(|| ((300.0 * bench.args.scale) as u64).max(60));
        step(&format!(
            "idle: kubesink run while nothing changes ({window} s)"
        ));
        let r = match sibling("kubesink") {
            Ok(k) => kubesink_bench::idle::scenario(
                k,
                Duration::from_secs(window),
                Duration::from_secs(bench.args.idle_settle_secs),
            )
            .await
            .map(|f| bench.report.figures.extend(f)),
            Err(e) => Err(e),
        };
        bench.record("idle", r);
    }
    if bench.wants("livecpu") {
        // 10,000 operations at the highest rate and 6,000 at 200/s (30 s)
        // at scale 1.
        let ops = |n: f64| ((n * bench.args.scale) as usize).max(1000);
        step("livecpu: kubesink run's CPU per event operation, beside a kube-rs floor");
        let r = match (sibling("kubesink"), sibling("kubesink-floor")) {
            (Ok(k), Ok(f)) => kubesink_bench::livecpu::scenario(k, f, ops(10_000.0), ops(6_000.0))
                .await
                .map(|f| bench.report.figures.extend(f)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        bench.record("livecpu", r);
    }
    if bench.wants("restart") {
        let r = bench.restart().await;
        bench.record("restart", r);
    }
    if bench.args.scale < 1.0 {
        bench.report.notes.push(format!(
            "Scale {}: the data set and the live runs are smaller than the issue's; rates are comparable, totals are not.",
            bench.args.scale
        ));
    }
    let out = root.join(&bench.args.out);
    let every = [
        "mysql", "replay", "sls", "calls", "memory", "latency", "idle", "livecpu", "restart",
    ];
    if !every.iter().all(|s| bench.wants(s))
        && let Some(previous) = std::fs::read_to_string(&out)
            .ok()
            .and_then(|text| kubesink_bench::report::Previous::parse(&text))
    {
        bench.report.update(previous);
    }
    write_report(&out, &bench.report)?;
    eprintln!(
        "\nwrote {} in {:.0} s ({} figures, {} failures)",
        out.display(),
        started.elapsed().as_secs_f64(),
        bench.report.figures.len(),
        bench.report.failures.len()
    );
    print!("{}", bench.report.render());
    if bench.report.failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} scenario(s) failed", bench.report.failures.len())
    }
}

#[cfg(test)]
mod tests {
    use super::buffer_pool_option;

    #[test]
    fn the_buffer_pool_option_is_read_with_its_unit() {
        let both = "--innodb-buffer-pool-size=2G --innodb-log-file-size=1G";
        assert_eq!(buffer_pool_option(both), Some(2 << 30));
        assert_eq!(
            buffer_pool_option("--x --innodb-buffer-pool-size=128m"),
            Some(128 << 20)
        );
        assert_eq!(
            buffer_pool_option("--innodb-buffer-pool-size=1048576"),
            Some(1 << 20)
        );
        assert_eq!(buffer_pool_option("--innodb-log-file-size=1G"), None);
        assert_eq!(buffer_pool_option("--innodb-buffer-pool-size=2T"), None);
    }
}
