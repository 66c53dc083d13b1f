//! **restart**: duplicates per restart for a log sink. `events` events are
//! created on a real control plane while `kubesink run` delivers them
//! through the sls sink into the SLS emulator; kubesink is then stopped
//! (SIGTERM) and started again, once with `--no-checkpoint` (what every
//! start did before checkpoints) and once with the default checkpoint.
//! After each start a marker event is created; the listing is delivered
//! before the watch's first change, so once the marker arrives everything
//! the start delivered again has arrived: the duplicates are the logs
//! received since the start, less the marker.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use kubesink_tests::binary::{Kubesink, cache_env};
use kubesink_tests::cluster::Cluster;
use kubesink_tests::sls::Emulator;
use kubesink_tests::wait::eventually;
use serde_json::json;

use crate::live::CREATE_CONCURRENCY;

/// How long each wait may take.
const WAIT: Duration = Duration::from_secs(600);

/// Duplicates after one restart without and with the checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Duplicates {
    /// `--no-checkpoint`: every event the API server holds, again.
    pub without: usize,
    /// The default: what the checkpoint did not cover.
    pub with: usize,
}

fn event(name: &str) -> anyhow::Result<Event> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p", "apiVersion": "v1"},
        "reason": "Bench", "message": format!("event {name}"), "type": "Normal", "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "source": {"component": "bench"},
    }))?)
}

fn start(
    kubesink: &Path,
    config: &Path,
    cluster: &Cluster,
    dir: &Path,
    (name, extra): (&str, &[&str]),
) -> anyhow::Result<Kubesink> {
    let mut args = vec![
        "--config".to_owned(),
        config.display().to_string(),
        "run".to_owned(),
        "--kubeconfig".to_owned(),
        cluster.kubeconfig_path().display().to_string(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    args.extend(extra.iter().map(|&a| a.to_owned()));
    let mut env = cache_env();
    env.push(("POD_NAMESPACE".into(), "default".into()));
    Kubesink::start(kubesink, &args, &env, &dir.join(format!("{name}.log")))
}

/// Logs of reason `Bench` in the emulator.
fn logs(emulator: &Emulator) -> usize {
    emulator
        .logs("kubesink", "events")
        .iter()
        .filter(|l| l.get("Reason") == Some("Bench"))
        .count()
}

async fn wait_logs(
    emulator: &Emulator,
    ks: &mut Kubesink,
    n: usize,
    what: &str,
) -> anyhow::Result<()> {
    eventually(WAIT, what, || {
        let done = logs(emulator) >= n;
        let alive = ks.check_alive();
        async move {
            alive?;
            Ok(done)
        }
    })
    .await
    .with_context(|| ks.tail(20))
}

/// Starts once more with `extra` arguments, its log `<marker>.log`;
/// returns the logs it delivered again.
async fn restart(
    kubesink: &Path,
    config: &Path,
    cluster: &Cluster,
    emulator: &Emulator,
    dir: &Path,
    extra: &[&str],
    marker: &str,
) -> anyhow::Result<usize> {
    let before = logs(emulator);
    let mut ks = start(kubesink, config, cluster, dir, (marker, extra))?;
    let events: Api<Event> = Api::namespaced(cluster.client(), "default");
    // The marker comes after the listing: once it arrived, so did the
    // listing's deliveries.
    ks.wait_for_count("listed; watching", 3, WAIT).await?;
    events
        .create(&PostParams::default(), &event(marker)?)
        .await?;
    eventually(WAIT, "the marker event", || {
        let arrived = emulator
            .logs("kubesink", "events")
            .iter()
            .any(|l| l.get("Name") == Some(marker));
        async move { Ok(arrived) }
    })
    .await
    .with_context(|| ks.tail(20))?;
    let again = logs(emulator) - before - 1;
    ks.terminate(WAIT).await?;
    Ok(again)
}

/// Runs the scenario with `events` retained events.
pub async fn duplicates_per_restart(
    kubesink: &Path,
    sls_wasm: &Path,
    cluster: &Cluster,
    emulator: &Emulator,
    events: usize,
) -> anyhow::Result<Duplicates> {
    let dir = tempfile::tempdir()?;
    let key = &emulator.config().keys[0];
    let config = dir.path().join("kubesink.yaml");
    std::fs::write(
        &config,
        format!(
            "sinks:\n  - name: sls\n    module: '{}'\n    records: [events]\n    allow_hosts: ['http://{}']\n    settings:\n      endpoint: '{}'\n      project: kubesink\n      logstore: events\n      access_key_id: '{}'\n      access_key_secret: '{}'\n",
            sls_wasm.display(),
            emulator.addr(),
            emulator.endpoint(),
            key.id,
            key.secret
        ),
    )?;
    let mut ks = start(kubesink, &config, cluster, dir.path(), ("first", &[]))?;
    let api: Api<Event> = Api::namespaced(cluster.client(), "default");
    stream::iter(0..events)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &event(&format!("bench-{i}"))?)
                    .await
                    .with_context(|| format!("creating event bench-{i}"))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    wait_logs(emulator, &mut ks, events, "every event delivered once").await?;
    ks.terminate(WAIT).await?;
    // With the checkpoint first: a run without one writes none, so what it
    // delivered (its marker) would count against the next.
    let with = restart(
        kubesink,
        &config,
        cluster,
        emulator,
        dir.path(),
        &[],
        "marker-1",
    )
    .await?;
    let without = restart(
        kubesink,
        &config,
        cluster,
        emulator,
        dir.path(),
        &["--no-checkpoint"],
        "marker-2",
    )
    .await?;
    Ok(Duplicates { without, with })
}
