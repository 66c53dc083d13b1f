//! High availability: two `kubesink run --leader-elect` replicas share a
//! Lease; only the leader watches and delivers. While changes are driven
//! through the API the leader is stopped with SIGTERM (it delivers what is
//! queued and releases the Lease: the standby takes over at once), a new
//! standby is started, and then the leader is killed with SIGKILL (the
//! standby takes over once the Lease expires). A kubesink without leader
//! election writes the same changes into a reference database; the rows of
//! the replicas must match them exactly (nothing lost, nothing duplicated).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kubesink_tests::mariadb;

use crate::crash::{Driver, check_plan_rows, cluster_with_tfjobs, plan};
use crate::live::{run_kubedl, wait_same_rows};
use kubesink_tests::binary::{Kubesink, tail};

/// The lines of each replica's log about leadership, listings and
/// reconciliation (what decides whether a record is marked removed).
fn replica_story(logs: &[(String, String)]) -> String {
    logs.iter()
        .map(|(name, log)| {
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    ["leader", "lease", "listed", "marked", "reconcil"]
                        .iter()
                        .any(|w| l.contains(w))
                })
                .collect();
            format!("--- {name}\n{}", lines.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lease duration the replicas run with.
const LEASE: Duration = Duration::from_secs(4);

/// Which of `replicas` logged `became the leader` (exactly one must, within
/// `within`), and how long it took.
async fn leader_of(replicas: &[&Kubesink], within: Duration) -> Result<(usize, Duration)> {
    let started = Instant::now();
    while started.elapsed() < within {
        let leaders: Vec<usize> = (0..replicas.len())
            .filter(|&i| replicas[i].log().contains("became the leader"))
            .collect();
        match leaders.as_slice() {
            [one] => return Ok((*one, started.elapsed())),
            [] => tokio::time::sleep(Duration::from_millis(50)).await,
            many => anyhow::bail!("several leaders at once: {many:?}"),
        }
    }
    anyhow::bail!(
        "no replica became the leader within {within:?}; logs:\n{}",
        replicas
            .iter()
            .map(|r| format!("{}:\n{}", r.name(), r.tail(15)))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// Checks a replica watched nothing before it led: `listed; watching`
/// appears only after `became the leader` in its log.
fn watched_only_as_leader(replica: &Kubesink) -> Result<()> {
    let log = replica.log();
    if let Some(listed) = log.find("listed; watching") {
        let led = log.find("became the leader").with_context(|| {
            format!(
                "{} watched without leading:\n{}",
                replica.name(),
                tail(&log, 20)
            )
        })?;
        anyhow::ensure!(led < listed, "{} watched before it led", replica.name());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mariadb_leader_hand_over_on_sigterm_and_sigkill_loses_and_duplicates_nothing()
-> Result<()> {
    let cluster = cluster_with_tfjobs().await?;
    let dir = tempfile::tempdir()?;
    let (want_db, ha_db) = (
        mariadb::fresh_database("ha_want").await?,
        mariadb::fresh_database("ha_got").await?,
    );
    let kubeconfig = cluster.kubeconfig_path();
    let lease = format!("{}s", LEASE.as_secs());
    let elect = [
        "--leader-elect",
        "--lease-namespace",
        "default",
        "--lease-duration",
        lease.as_str(),
    ];
    let mut reference = run_kubedl("reference", kubeconfig, &want_db, &[], dir.path())?;
    let a = run_kubedl("a", kubeconfig, &ha_db, &elect, dir.path())?;
    let b = run_kubedl("b", kubeconfig, &ha_db, &elect, dir.path())?;
    reference
        .wait_for_count("listed; watching", 4, Duration::from_secs(120))
        .await?;
    let (first, _) = leader_of(&[&a, &b], Duration::from_secs(60)).await?;
    let (mut leader, mut standby) = if first == 0 { (a, b) } else { (b, a) };
    standby
        .wait_for_count("standing by for leadership", 1, Duration::from_secs(30))
        .await?;
    leader
        .wait_for_count("listed; watching", 4, Duration::from_secs(60))
        .await?;

    let rounds = 9;
    let ops = plan(rounds);
    let third = ops.len() / 3;
    let mut driver = Driver::new(cluster.client());
    let mut takeovers = Vec::new();
    // The logs of replicas stopped on the way, for a failure's message.
    let mut retired: Vec<(String, String)> = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        if n == third {
            // SIGTERM: the leader delivers its queue, releases the Lease
            // and exits 0; the standby takes over at once.
            let stopped = Instant::now();
            let status = leader.terminate(Duration::from_secs(60)).await?;
            assert!(status.success(), "{}: {status}", leader.name());
            assert!(leader.log().contains("released the lease"));
            let (_, took) = leader_of(&[&standby], LEASE * 3).await?;
            takeovers.push(("SIGTERM", stopped.elapsed().max(took)));
            // A new replica stands by.
            let mut fresh = run_kubedl("c", kubeconfig, &ha_db, &elect, dir.path())?;
            fresh
                .wait_for_count("standing by for leadership", 1, Duration::from_secs(30))
                .await?;
            std::mem::swap(&mut leader, &mut standby);
            let stopped = std::mem::replace(&mut standby, fresh);
            retired.push((stopped.name().to_owned(), stopped.log()));
        }
        if n == 2 * third {
            // SIGKILL: no release; the standby takes over once the Lease
            // expires, within the lease duration (plus its renewal poll).
            let killed = Instant::now();
            leader.kill();
            let before = standby.log().matches("became the leader").count();
            standby
                .wait_for_count("became the leader", before + 1, LEASE * 3)
                .await
                .context("the standby did not take over after the SIGKILL")?;
            takeovers.push(("SIGKILL", killed.elapsed()));
            std::mem::swap(&mut leader, &mut standby);
        }
        driver
            .apply(n, op)
            .await
            .with_context(|| format!("change {n}: {op:?}"))?;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    eprintln!("take-over times: {takeovers:?}");
    assert!(
        takeovers[1].1 <= LEASE + Duration::from_secs(3),
        "SIGKILL take-over took {:?} with a {LEASE:?} lease",
        takeovers[1].1
    );

    let (want, got) = (want_db.connect().await?, ha_db.connect().await?);
    let rows = match wait_same_rows(&want, &got, &Default::default(), 120).await {
        Ok(rows) => rows,
        Err(e) => {
            retired.push((leader.name().to_owned(), leader.log()));
            retired.push((standby.name().to_owned(), standby.log()));
            return Err(e.context(format!(
                "what each replica logged about leading, listing and reconciling:\n{}",
                replica_story(&retired)
            )));
        }
    };
    check_plan_rows(&rows, rounds)?;
    // Both replicas that took over had stood by without watching.
    watched_only_as_leader(&leader)?;
    watched_only_as_leader(&standby)?;
    assert!(leader.running(), "{}", leader.tail(20));
    want.close().await;
    got.close().await;
    drop((reference, leader, standby));
    want_db.drop_database().await?;
    ha_db.drop_database().await?;
    Ok(())
}
