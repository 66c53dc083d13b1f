//! The **idle** scenario: what `kubesink run` costs while nothing changes
//! in the cluster. Against a real control plane (etcd + kube-apiserver,
//! `kubesink_tests::cluster`) holding one Job, kubesink runs
//!
//! - with the **default configuration** (no config file: the bundled mysql
//!   sink into `./kubesink.db`, SQLite, in a directory of its own), and
//! - with **KubeDL's switches** (`--meta-storage mysql --event-storage
//!   mysql`, `MYSQL_*`: the mysql sink into MariaDB),
//!
//! both at once, each with its operations server (on a free port). Once
//! each is ready (`/readyz`: every watch listed) and has delivered the Job,
//! and after a settling time (the retries of the training-job resources
//! the test API server does not serve reach their longest delay), the CPU
//! time (user + system, `/proc/<pid>/stat`) and the context switches of all
//! its threads (`/proc/<pid>/task/*/status`: how often it woke) are read at
//! the start and the end of a window of several minutes. Optionally a
//! second binary (`BENCH_IDLE_BASELINE`, e.g. an older build) runs the
//! same two ways in the same window, for a before/after from one run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kubesink_tests::binary::Kubesink;
use kubesink_tests::cluster::Cluster;
use kubesink_tests::mariadb::TestDb;

use crate::procfs;

/// One `kubesink run` measured while idle.
#[derive(Debug)]
pub struct Idle {
    /// Which binary and configuration.
    pub label: String,
    /// CPU seconds (user + system) per minute of the window.
    pub cpu_per_min: f64,
    /// Context switches (voluntary + involuntary, all threads) per minute.
    pub switches_per_min: f64,
    /// Threads at the end.
    pub threads: usize,
}

/// How kubesink is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// No config file: `./kubesink.db` through the bundled mysql sink.
    Default,
    /// `--meta-storage mysql --event-storage mysql` into MariaDB.
    KubedlMysql,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Default => "default config (SQLite)",
            Setup::KubedlMysql => "KubeDL switches, mysql sink on MariaDB",
        }
    }
}

/// Starts `kubesink run` from `binary` against `cluster`, configured as
/// `setup`, working in `dir` (created), logging to `dir/kubesink.log`.
pub fn start(
    binary: &Path,
    setup: Setup,
    cluster: &Cluster,
    db: &TestDb,
    dir: &Path,
) -> anyhow::Result<Kubesink> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut args: Vec<String> = Vec::new();
    let mut env: Vec<(String, String)> = vec![(
        "KUBESINK_CACHE_DIR".to_owned(),
        dir.join("cache").display().to_string(),
    )];
    if setup == Setup::KubedlMysql {
        args.extend(
            ["--meta-storage", "mysql", "--event-storage", "mysql"]
                .iter()
                .map(|s| (*s).to_owned()),
        );
        env.extend(db.kubedl_env().into_iter().map(|(k, v)| (k.to_owned(), v)));
    }
    args.extend([
        "run".to_owned(),
        "--kubeconfig".to_owned(),
        cluster.kubeconfig_path().display().to_string(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ]);
    Kubesink::start_in(dir, binary, &args, &env, &dir.join("kubesink.log"))
}

/// Waits until `ks` is ready and has delivered at least one record with
/// an empty queue; fails after `timeout`.
pub async fn wait_ready(ks: &mut Kubesink, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        ks.check_alive()?;
        if let Ok((200, _)) = ks.get("/readyz").await
            && let Ok((200, text)) = ks.get("/metrics").await
        {
            let delivered = sum(&text, "kubesink_sink_records_delivered_total");
            let depth = sum(&text, "kubesink_sink_queue_depth");
            if delivered >= 1.0 && depth == 0.0 {
                return Ok(());
            }
            last = format!("delivered {delivered}, queue depth {depth:?}");
        }
        if started.elapsed() > timeout {
            bail!(
                "kubesink {} was not ready with the job delivered within {timeout:?} ({last})",
                ks.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sum of every series of metric `name` (all sinks) in `text`.
fn sum(text: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU seconds and context switches of every thread of `pid` so far.
fn sample_pid(pid: u32) -> anyhow::Result<(f64, u64, usize)> {
    let cpu = procfs::cpu_seconds(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let mut switches = 0;
    let mut threads = 0;
    let tasks = format!("/proc/{pid}/task");
    for task in std::fs::read_dir(&tasks).with_context(|| format!("listing {tasks}"))? {
        let status = task?.path().join("status");
        let Ok(text) = std::fs::read_to_string(&status) else {
            continue; // a thread that just ended
        };
        threads += 1;
        for line in text.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok((cpu, switches, threads))
}

/// Measures every process of `all` (label, process) over one window of
/// `window`, all at once; each must stay alive.
pub async fn measure(
    all: &mut [(String, Kubesink)],
    window: Duration,
) -> anyhow::Result<Vec<Idle>> {
    let mut before = Vec::new();
    for (_, ks) in all.iter_mut() {
        ks.check_alive()?;
        let pid = ks.pid().context("kubesink is not running")?;
        before.push((pid, sample_pid(pid)?));
    }
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let mut out = Vec::new();
    for ((label, ks), (pid, (cpu0, sw0, _))) in all.iter_mut().zip(before) {
        ks.check_alive()?;
        let (cpu1, sw1, threads) = sample_pid(pid)?;
        out.push(Idle {
            label: label.clone(),
            cpu_per_min: (cpu1 - cpu0) / minutes,
            switches_per_min: sw1.saturating_sub(sw0) as f64 / minutes,
            threads,
        });
    }
    Ok(out)
}

/// The binaries measured: `kubesink` (this build) and, when
/// `BENCH_IDLE_BASELINE` names one, that binary too.
pub fn binaries(kubesink: PathBuf) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = vec![("this build".to_owned(), kubesink)];
    if let Some(base) = std::env::var_os("BENCH_IDLE_BASELINE") {
        let base = PathBuf::from(base);
        anyhow::ensure!(
            base.is_file(),
            "BENCH_IDLE_BASELINE={} is not a file",
            base.display()
        );
        out.push((format!("baseline `{}`", base.display()), base));
    }
    Ok(out)
}

/// Every (binary, setup) pair, labelled.
pub fn runs(binaries: &[(String, PathBuf)]) -> Vec<(String, PathBuf, Setup)> {
    let mut out = Vec::new();
    for (label, path) in binaries {
        for setup in [Setup::Default, Setup::KubedlMysql] {
            out.push((format!("{}, {label}", setup.name()), path.clone(), setup));
        }
    }
    out
}

/// The whole scenario: a control plane with one Job, MariaDB, every
/// [`runs`] pair started at once, ready, settled for `settle`, measured
/// over `window`. Returns the report's rows.
pub async fn scenario(
    kubesink: PathBuf,
    window: Duration,
    settle: Duration,
) -> anyhow::Result<Vec<crate::report::Figure>> {
    use crate::report::{Figure, Target};
    let cluster = kubesink_tests::cluster::start().await?;
    crate::live::create_job(&cluster.client()).await?;
    let dir = tempfile::tempdir()?;
    let mut procs: Vec<(String, Kubesink)> = Vec::new();
    let mut dbs = Vec::new();
    for (i, (label, binary, setup)) in runs(&binaries(kubesink)?).into_iter().enumerate() {
        // Each its own database: a later one must not find the rows ready.
        let db = kubesink_tests::mariadb::fresh_database(&format!("bench_idle_{i}")).await?;
        let ks = start(
            &binary,
            setup,
            &cluster,
            &db,
            &dir.path().join(format!("run-{i}")),
        )?;
        procs.push((label, ks));
        dbs.push(db);
    }
    for (_, ks) in &mut procs {
        wait_ready(ks, Duration::from_secs(180)).await?;
    }
    eprintln!(
        "  {} kubesink ready; settling {settle:?}, then measuring over {window:?}",
        procs.len()
    );
    tokio::time::sleep(settle).await;
    let measured = measure(&mut procs, window).await?;
    let mut figures = Vec::new();
    for m in &measured {
        eprintln!(
            "  {}: {:.4} CPU-s/min, {:.0} context switches/min, {} threads",
            m.label, m.cpu_per_min, m.switches_per_min, m.threads
        );
        figures.push(Figure::new(
            &format!("idle `kubesink run`: {}", m.label),
            m.cpu_per_min,
            "CPU-s/min",
            Target::AtMost(0.05),
            format!(
                "nothing changing in the cluster (one Job, delivered), after {:.0} s settling, over {:.0} s: user + system CPU from `/proc/<pid>/stat`; {:.0} context switches/min (all {} threads); operations server on",
                settle.as_secs_f64(),
                window.as_secs_f64(),
                m.switches_per_min,
                m.threads
            ),
        ));
    }
    drop(procs);
    for db in dbs {
        db.drop_database().await?;
    }
    drop(cluster);
    Ok(figures)
}
