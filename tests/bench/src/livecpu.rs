//! The **live CPU** scenario: what `kubesink run` costs per watched
//! change. Against a real control plane, kubesink runs with KubeDL's
//! switches (the mysql sink into MariaDB, as in the comparison with
//! kube-eventer) while events are created and their counts bumped (one op
//! in five a bump), first as fast as the API server takes them (64 in
//! flight), then at a steady 200/s. Beside it runs the **floor**
//! (`kubesink-floor`): a kube-rs watcher of the same events that only
//! receives and decodes them. The CPU time (user + system, `/proc`) of each
//! process from the first op until each has seen the last (kubesink: every
//! event's final count in `event_info`) is reported per 1,000 operations.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use sqlx::MySqlPool;

use crate::idle::{self, Setup};
use crate::procfs;
use crate::report::{Figure, Target};

const NS: &str = "default";
/// Operations in flight at the highest rate.
const IN_FLIGHT: usize = 64;
/// Of each round's operations, one in five bumps an event of the round
/// before (so every bumped event exists).
const ROUND: usize = 500;

/// The floor process; killed when dropped.
struct Floor {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Floor {
    fn start(binary: &Path, kubeconfig: &Path, expect: usize) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .arg(kubeconfig)
            .arg(NS)
            .arg(expect.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("the floor's stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// Waits for `line` on the floor's stdout.
    async fn wait(&mut self, line: &str, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            match self.lines.try_recv() {
                Ok(l) if l == line => return Ok(()),
                Ok(_) => continue,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    bail!("kubesink-floor ended before saying {line}")
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
            if started.elapsed() > timeout {
                bail!("kubesink-floor did not say {line} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn event(name: &str, i: usize) -> anyhow::Result<Event> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name},
        "involvedObject": {"kind": "Pod", "namespace": NS, "name": "load-0"},
        "reason": "Pulled", "message": format!("Container image pulled {i}"),
        "type": "Normal", "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "source": {"component": "kubelet", "host": "n1"}
    }))?)
}

/// What a load left behind: events created, and the sum of their counts.
struct Load {
    creates: usize,
    count_sum: usize,
    took: Duration,
}

/// `ops` operations named `prefix-*`: per round of [`ROUND`], four in five
/// create an event and one in five bumps the count of one created in the
/// round before (to 2). `rate`: operations per second, or `None` for as
/// fast as the API server takes them ([`IN_FLIGHT`] at once).
async fn load(
    client: &kube::Client,
    prefix: &str,
    ops: usize,
    rate: Option<u64>,
) -> anyhow::Result<Load> {
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    let mut tick = rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r.max(1) as f64));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut previous: Vec<String> = Vec::new();
    let (mut creates, mut bumps, mut done) = (0, 0, 0);
    while done < ops {
        let n = ROUND.min(ops - done);
        let mut round = Vec::with_capacity(n);
        let mut created = Vec::new();
        for k in 0..n {
            let bump = k % 5 == 4 && bumps < previous.len();
            if bump {
                round.push((previous[bumps].clone(), true));
                bumps += 1;
            } else {
                let name = format!("{prefix}-{creates}");
                created.push(name.clone());
                round.push((name, false));
                creates += 1;
            }
        }
        // At a set rate the ticks pace the operations; else at most
        // IN_FLIGHT are in flight.
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut tasks = Vec::with_capacity(n);
        for (k, (name, bump)) in round.into_iter().enumerate() {
            if let Some(t) = tick.as_mut() {
                t.tick().await;
            }
            let slot = slots.clone().acquire_owned().await?;
            let events = events.clone();
            let i = done + k;
            tasks.push(tokio::spawn(async move {
                let _slot = slot;
                if bump {
                    let patch = json!({"count": 2, "lastTimestamp": "2026-01-01T00:00:01Z"});
                    events
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                } else {
                    events
                        .create(&PostParams::default(), &event(&name, i)?)
                        .await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        // Bumps of this round's events come in the next; the ones of the
        // round before that were all used or are left at count 1.
        previous = created;
        bumps = 0;
        done += n;
    }
    let took = started.elapsed();
    // Each create is count 1; each bump took one event to count 2.
    let count_sum = creates + (ops - creates);
    Ok(Load {
        creates,
        count_sum,
        took,
    })
}

async fn wait_rows(
    pool: &MySqlPool,
    prefix: &str,
    load: &Load,
    ks: &mut kubesink_tests::binary::Kubesink,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let pattern = format!("{prefix}-%");
    loop {
        let (rows, sum): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(count), 0) AS SIGNED) FROM event_info WHERE name LIKE ?",
        )
        .bind(&pattern)
        .fetch_one(pool)
        .await
        .context("counting event_info")?;
        if rows as usize == load.creates && sum as usize == load.count_sum {
            return Ok(());
        }
        ks.check_alive()?;
        if started.elapsed() > timeout {
            bail!(
                "kubesink stored {rows} of {} events (count sum {sum} of {}) within {timeout:?}",
                load.creates,
                load.count_sum
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The scenario: `ops_max` operations at the highest rate, then
/// `ops_steady` at 200/s. Returns the report's rows.
pub async fn scenario(
    kubesink: PathBuf,
    floor: PathBuf,
    ops_max: usize,
    ops_steady: usize,
) -> anyhow::Result<Vec<Figure>> {
    let cluster = kubesink_tests::cluster::start().await?;
    let client = cluster.client();
    crate::live::create_job(&client).await?;
    let db = kubesink_tests::mariadb::fresh_database("bench_livecpu").await?;
    let pool = db.connect().await?;
    let dir = tempfile::tempdir()?;
    let mut ks = idle::start(&kubesink, Setup::KubedlMysql, &cluster, &db, dir.path())?;
    idle::wait_ready(&mut ks, Duration::from_secs(180)).await?;
    let ks_pid = ks.pid().context("kubesink is not running")?;
    let mut figures = Vec::new();
    for (phase, ops, rate) in [("max", ops_max, None), ("steady", ops_steady, Some(200))] {
        let mut floor = Floor::start(&floor, cluster.kubeconfig_path(), ops)?;
        floor.wait("ready", Duration::from_secs(60)).await?;
        let prefix = format!("cpu-{phase}");
        let cpu = |pid| procfs::cpu_seconds(pid).context("reading /proc/<pid>/stat");
        let (ks0, floor0) = (cpu(ks_pid)?, cpu(floor.pid())?);
        let load = load(&client, &prefix, ops, rate).await?;
        floor.wait("done", Duration::from_secs(120)).await?;
        let floor1 = cpu(floor.pid())?;
        wait_rows(&pool, &prefix, &load, &mut ks, Duration::from_secs(300)).await?;
        let ks1 = cpu(ks_pid)?;
        let per_k = |cpu: f64| cpu / ops as f64 * 1000.0;
        let (k, f) = (per_k(ks1 - ks0), per_k(floor1 - floor0));
        let achieved = ops as f64 / load.took.as_secs_f64().max(1e-9);
        let rate_label = match rate {
            None => format!("highest rate ({achieved:.0} ops/s achieved, {IN_FLIGHT} in flight)"),
            Some(r) => format!("{r} ops/s ({achieved:.0} achieved)"),
        };
        eprintln!("  live CPU, {rate_label}: kubesink {k:.4}, floor {f:.4} CPU-s per 1000 ops");
        let how = format!(
            "{ops} event operations ({} creates, the rest count bumps) at the {rate_label}; user + system CPU from `/proc/<pid>/stat`, from the first operation until every event's final count is in `event_info`; `kubesink run` with KubeDL's switches (mysql sink into MariaDB, default workers)",
            load.creates
        );
        figures.push(Figure::new(
            &format!("live `kubesink run`, CPU per 1,000 event operations, {phase} rate"),
            k,
            "CPU-s",
            Target::AtMost(0.045),
            how,
        ));
        figures.push(Figure::new(
            &format!("floor: kube-rs watcher decoding the same events, {phase} rate"),
            f,
            "CPU-s",
            Target::None,
            "`kubesink-floor`: kube-rs `watcher` on the events' namespace, each decoded into k8s-openapi's `Event`, nothing else; CPU from the first operation until it received the last",
        ));
        figures.push(Figure::new(
            &format!("ratio kubesink / floor, {phase} rate"),
            k / f.max(1e-9),
            "×",
            Target::AtMost(1.5),
            "the two rows above",
        ));
    }
    drop(ks);
    db.drop_database().await?;
    drop(cluster);
    Ok(figures)
}
