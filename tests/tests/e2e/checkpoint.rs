//! Log sinks see each update once across restarts: the bundled sls sink
//! (a log, so checkpointed by default) writes into the SLS emulator while
//! kubesink runs on the real API server and is restarted gracefully,
//! killed with SIGKILL while idle, has its watches expire (410 after an
//! API server restart and an etcd compaction), and hands over between two
//! leader-elected replicas — with events created and counts bumped (twice
//! for one object) while it is down. Every event update (name, count) must
//! arrive exactly once; after the 410 only the newest state of an object
//! changed meanwhile can (etcd's history is gone), and the test changes
//! each object once there.
//! Last, a SIGKILL in the middle of delivering: what arrives twice must be
//! only what the checkpoint did not cover yet, and the test counts it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubesink_tests::binary::{Kubesink, cache_env, kubesink_binary};
use kubesink_tests::sls::{self, Emulator, EmulatorConfig, Fault};
use kubesink_tests::wait::eventually;
use kubesink_tests::{cluster, guests};
use serde_json::json;

const REASON: &str = "Checkpointed";
const WAIT: Duration = Duration::from_secs(90);
const CONFIGMAP: &str = "kubesink-checkpoints";

/// An event update: (name, count).
type Update = (String, u32);

struct Rig {
    cluster: cluster::Cluster,
    emulator: Emulator,
    dir: tempfile::TempDir,
    config: PathBuf,
    events: Api<Event>,
    /// Every update made, with its resourceVersion.
    made: BTreeMap<Update, u64>,
    started: std::time::Instant,
}

impl Rig {
    async fn new() -> Result<Rig> {
        let cluster = cluster::start().await?;
        let emulator = sls::start(EmulatorConfig::default()).await?;
        let dir = tempfile::tempdir()?;
        let key = &emulator.config().keys[0];
        let config = dir.path().join("kubesink.yaml");
        std::fs::write(
            &config,
            format!(
                "sinks:\n  - name: sls\n    module: '{module}'\n    records: [events]\n    allow_hosts: ['http://{addr}']\n    batch: {{ max_records: 10, max_delay: 20ms }}\n    settings:\n      endpoint: '{endpoint}'\n      project: kubesink\n      logstore: events\n      access_key_id: '{id}'\n      access_key_secret: '{secret}'\n",
                module = guests::guest_wasm("kubesink-sink-sls")?.display(),
                addr = emulator.addr(),
                endpoint = emulator.endpoint(),
                id = key.id,
                secret = key.secret,
            ),
        )?;
        let events = Api::namespaced(cluster.client(), "default");
        Ok(Rig {
            cluster,
            emulator,
            dir,
            config,
            events,
            made: BTreeMap::new(),
            started: std::time::Instant::now(),
        })
    }

    /// `kubesink run` with the sls sink, its log in `<dir>/<name>.log`.
    fn start(&self, name: &str, extra: &[&str]) -> Result<Kubesink> {
        let mut args: Vec<String> = vec![
            "--config".into(),
            self.config.display().to_string(),
            "run".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--kubeconfig".into(),
            self.cluster.kubeconfig_path().display().to_string(),
        ];
        args.extend(extra.iter().map(|&a| a.to_owned()));
        let mut env = cache_env();
        env.push(("POD_NAMESPACE".into(), "default".into()));
        env.push((
            "KUBESINK_LOG".into(),
            "warn,kubesink=info,kube_lease_manager=info".into(),
        ));
        Kubesink::start(
            &kubesink_binary()?,
            &args,
            &env,
            &self.dir.path().join(format!("{name}.log")),
        )
    }

    fn version(e: &Event) -> Result<u64> {
        e.metadata
            .resource_version
            .as_deref()
            .context("no resourceVersion")?
            .parse()
            .context("resourceVersion")
    }

    async fn create(&mut self, name: &str) -> Result<()> {
        let event: Event = serde_json::from_value(json!({
            "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p", "apiVersion": "v1"},
            "reason": REASON, "message": format!("event {name}"), "type": "Normal", "count": 1,
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
            "source": {"component": "e2e"},
        }))?;
        let created = self
            .events
            .create(&PostParams::default(), &event)
            .await
            .with_context(|| format!("create event {name}"))?;
        self.made
            .insert((name.to_owned(), 1), Self::version(&created)?);
        Ok(())
    }

    async fn create_all(&mut self, prefix: &str, range: std::ops::Range<usize>) -> Result<()> {
        for i in range {
            self.create(&format!("{prefix}-{i}")).await?;
        }
        Ok(())
    }

    /// Sets event `name`'s count (a new update of it).
    async fn bump(&mut self, name: &str, count: u32) -> Result<()> {
        let patched = self
            .events
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"count": count})),
            )
            .await
            .with_context(|| format!("bump event {name}"))?;
        self.made
            .insert((name.to_owned(), count), Self::version(&patched)?);
        Ok(())
    }

    /// How often each update arrived in the emulator.
    fn received(&self) -> BTreeMap<Update, usize> {
        let mut seen = BTreeMap::new();
        for log in self.emulator.logs("kubesink", "events") {
            if log.get("Reason") != Some(REASON) {
                continue;
            }
            let name = log.get("Name").unwrap_or_default().to_owned();
            let count = log.get("Count").and_then(|c| c.parse().ok()).unwrap_or(0);
            *seen.entry((name, count)).or_default() += 1;
        }
        seen
    }

    /// Waits until every update made has arrived (once or more). On a
    /// timeout the error says what is missing, what the emulator was sent
    /// and what kubesink's metrics say of the sink, besides its log.
    async fn wait_all(&self, ks: &mut Kubesink) -> Result<()> {
        let what = format!("all {} updates in the emulator", self.made.len());
        let waited = eventually(WAIT, &what, || {
            let missing = self
                .made
                .keys()
                .filter(|u| !self.received().contains_key(*u))
                .count();
            let alive = ks.check_alive();
            async move {
                alive?;
                Ok(missing == 0)
            }
        })
        .await;
        if waited.is_ok() {
            return Ok(());
        }
        let received = self.received();
        let missing: Vec<_> = self
            .made
            .keys()
            .filter(|u| !received.contains_key(*u))
            .collect();
        let metrics = ks.sink_metrics().await;
        waited.with_context(|| {
            format!(
                "missing {missing:?}; the emulator got {} requests; metrics:\n{metrics}\nlog:\n{}",
                self.emulator.request_count(),
                ks.tail(30)
            )
        })
    }

    /// Every update made arrived exactly once, and nothing else did.
    fn assert_once(&self, phase: &str) -> Result<()> {
        eprintln!("{phase}: checked at {:?}", self.started.elapsed());
        let received = self.received();
        let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
        let unknown: Vec<_> = received
            .keys()
            .filter(|u| !self.made.contains_key(*u))
            .collect();
        let missing: Vec<_> = self
            .made
            .keys()
            .filter(|u| !received.contains_key(*u))
            .collect();
        ensure!(
            twice.is_empty() && unknown.is_empty() && missing.is_empty(),
            "{phase}: duplicated {twice:?}, unknown {unknown:?}, missing {missing:?}"
        );
        Ok(())
    }

    /// The sls sink's Event frontier in the checkpoint ConfigMap.
    async fn frontier(&self) -> Result<Option<u64>> {
        let api: Api<ConfigMap> = Api::namespaced(self.cluster.client(), "default");
        let Some(map) = api.get_opt(CONFIGMAP).await? else {
            return Ok(None);
        };
        let Some(text) = map.data.as_ref().and_then(|d| d.get("frontiers.json")) else {
            return Ok(None);
        };
        let stored: serde_json::Value = serde_json::from_str(text)?;
        Ok(stored
            .pointer("/sls/Event")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse().ok()))
    }

    /// Waits until the checkpoint covers every update made.
    async fn wait_checkpointed(&self) -> Result<()> {
        let newest = self.made.values().copied().max().unwrap_or(0);
        eventually(
            WAIT,
            "the checkpoint to cover every update",
            || async move { Ok(self.frontier().await?.is_some_and(|f| f >= newest)) },
        )
        .await
    }
}

async fn became_leader(replicas: &[&Kubesink]) -> Result<usize> {
    let mut found = None;
    eventually(WAIT, "a replica to lead", || {
        let leaders: Vec<usize> = (0..replicas.len())
            .filter(|&i| replicas[i].log().contains("became the leader"))
            .collect();
        found = leaders.first().copied();
        async move {
            ensure!(leaders.len() <= 1, "several leaders: {leaders:?}");
            Ok(leaders.len() == 1)
        }
    })
    .await?;
    found.context("no leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sls_each_event_update_arrives_once_across_restart_kill_410_and_hand_over()
-> Result<()> {
    let mut rig = Rig::new().await?;

    // A first run delivers what changes once it watches. Not before: with
    // no checkpoint yet, an event created and bumped before the first
    // listing arrives only as its newest state (the listing's), so on a
    // slow start its first count would be missing, rightly.
    let mut ks = rig.start("a", &[])?;
    ks.wait_for_log("the event watch", WAIT, |line| {
        line.contains("listed; watching resource=events")
    })
    .await?;
    rig.create_all("e1", 0..10).await?;
    for i in 0..3 {
        rig.bump(&format!("e1-{i}"), 2).await?;
    }
    rig.wait_all(&mut ks).await?;
    rig.assert_once("first run")?;

    // A graceful restart, with changes while it is down.
    let status = ks.terminate(Duration::from_secs(60)).await?;
    ensure!(status.success(), "a: {status}\n{}", ks.tail(20));
    rig.create_all("e2", 0..5).await?;
    // Two updates of one object while down: both arrive (a watch resumed
    // from the checkpoint), not only the newest (the listing).
    rig.bump("e1-3", 2).await?;
    rig.bump("e1-3", 3).await?;
    let mut ks = rig.start("b", &[])?;
    rig.create_all("e2", 5..10).await?;
    rig.wait_all(&mut ks).await?;
    rig.assert_once("graceful restart")?;
    ensure!(
        ks.own_log().contains("checkpoint read"),
        "b did not read the checkpoint:\n{}",
        ks.tail(20)
    );

    // SIGKILL while idle (the checkpoint is written), changes while down.
    rig.wait_checkpointed().await?;
    ks.kill();
    rig.bump("e1-4", 2).await?;
    rig.create_all("e3", 0..5).await?;
    rig.bump("e1-4", 3).await?;
    rig.bump("e3-0", 2).await?;
    let mut ks = rig.start("c", &[])?;
    rig.wait_all(&mut ks).await?;
    rig.assert_once("SIGKILL while idle")?;

    // A forced 410: frozen while the API server restarts and etcd is
    // compacted past every version it saw; resumed, it lists again.
    rig.wait_checkpointed().await?;
    ks.pause()?;
    rig.cluster.stop_apiserver();
    rig.cluster.start_apiserver().await?;
    rig.bump("e1-5", 2).await?;
    rig.create_all("e4", 0..3).await?;
    crate::live::compact_etcd(rig.cluster.etcd_url()).await?;
    ks.resume()?;
    ks.wait_for_count(
        "watch expired (410 Gone); listing again",
        1,
        Duration::from_secs(60),
    )
    .await?;
    rig.wait_all(&mut ks).await?;
    rig.assert_once("forced 410")?;
    let status = ks.terminate(Duration::from_secs(60)).await?;
    ensure!(status.success(), "c: {status}\n{}", ks.tail(20));

    // A leader hand-over between two replicas.
    let elect = [
        "--leader-elect",
        "--lease-namespace",
        "default",
        "--lease-duration",
        "4s",
    ];
    let x = rig.start("x", &elect)?;
    let y = rig.start("y", &elect)?;
    let first = became_leader(&[&x, &y]).await?;
    let (mut leader, mut standby) = if first == 0 { (x, y) } else { (y, x) };
    rig.create_all("e5", 0..5).await?;
    rig.wait_all(&mut leader).await?;
    let status = leader.terminate(Duration::from_secs(60)).await?;
    ensure!(status.success(), "leader: {status}\n{}", leader.tail(20));
    rig.bump("e1-6", 2).await?;
    became_leader(&[&standby]).await?;
    rig.create_all("e5", 5..10).await?;
    rig.wait_all(&mut standby).await?;
    rig.assert_once("leader hand-over")?;
    let status = standby.terminate(Duration::from_secs(60)).await?;
    ensure!(status.success(), "standby: {status}\n{}", standby.tail(20));

    // SIGKILL while delivering: one request hangs in the emulator; what
    // the checkpoint covered at the kill never arrives twice.
    rig.wait_checkpointed().await?;
    let before = rig.made.len();
    let mut ks = rig.start("d", &[])?;
    rig.emulator.inject(Fault::Pass, 2);
    rig.emulator.inject(Fault::Delay(Duration::from_secs(3)), 1);
    rig.create_all("e6", 0..60).await?;
    let e6 = |r: &Rig| {
        r.received()
            .keys()
            .filter(|(n, _)| n.starts_with("e6-"))
            .count()
    };
    eventually(WAIT, "some of e6 delivered", || {
        let n = e6(&rig);
        async move { Ok(n >= 10) }
    })
    .await?;
    ks.kill();
    let covered = rig.frontier().await?.unwrap_or(0);
    let mut ks = rig.start("e", &[])?;
    rig.wait_all(&mut ks).await?;
    let received = rig.received();
    let twice: Vec<(&Update, u64)> = received
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(u, _)| (u, rig.made.get(u).copied().unwrap_or(0)))
        .collect();
    eprintln!(
        "SIGKILL while delivering {} updates: {} arrived twice (the checkpoint covered resourceVersion {covered})",
        rig.made.len() - before,
        twice.len()
    );
    if let Some((update, rv)) = twice.iter().find(|(_, rv)| *rv <= covered) {
        bail!("{update:?} (resourceVersion {rv}) arrived twice though the checkpoint covered it");
    }
    let _ = ks.terminate(Duration::from_secs(60)).await?;
    Ok(())
}
