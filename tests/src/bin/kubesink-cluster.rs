//! `kubesink-cluster` (`just cluster`): starts the test control plane
//! (etcd and kube-apiserver, see `kubesink_tests::cluster`) for manual use,
//! prints `KUBECONFIG=<path>` and keeps it running until interrupted
//! (Ctrl-C or SIGTERM), then stops it and removes its directory.

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cluster = kubesink_tests::cluster::start()
        .await
        .context("starting the control plane")?;
    let version = cluster
        .client()
        .apiserver_version()
        .await
        .context("asking the API server for its version")?;
    println!("KUBECONFIG={}", cluster.kubeconfig_path().display());
    eprintln!(
        "kube-apiserver {} at {} (etcd at {}); logs in {}",
        version.git_version,
        cluster.base_url(),
        cluster.etcd_url(),
        cluster.dir().display()
    );
    eprintln!("Press Ctrl-C to stop.");
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("listening for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    eprintln!("Stopping the control plane.");
    cluster.stop();
    Ok(())
}
