//! The floor of the bench's live CPU scenario: the least a watcher of
//! Events can do with kube-rs — receive the watch stream of one namespace
//! and decode each event into k8s-openapi's `Event` — and nothing more.
//!
//! `kubesink-floor KUBECONFIG NAMESPACE EXPECT` prints `ready` once its
//! first listing is done and `done` once it has received EXPECT changes
//! after it, then keeps watching until it is killed (so that its CPU is
//! read the same way as kubesink's).

use std::io::Write as _;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(kubeconfig), Some(namespace), Some(expect)) = (args.next(), args.next(), args.next())
    else {
        anyhow::bail!("usage: kubesink-floor KUBECONFIG NAMESPACE EXPECT");
    };
    let expect: u64 = expect.parse().context("EXPECT must be a number")?;
    let kubeconfig = Kubeconfig::read_from(&kubeconfig)
        .with_context(|| format!("reading kubeconfig {kubeconfig}"))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let events: Api<Event> = Api::namespaced(client, &namespace);
    let mut stream = watcher(events, watcher::Config::default()).boxed();
    let mut listed = false;
    let mut seen = 0u64;
    let mut said_done = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) if !listed => {
                listed = true;
                say("ready")?;
            }
            Ok(watcher::Event::Apply(e) | watcher::Event::Delete(e)) if listed => {
                // Touch the decoded object so that nothing is optimized away.
                seen += u64::from(e.metadata.name.is_some());
                if seen >= expect && !said_done {
                    said_done = true;
                    say("done")?;
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("kubesink-floor: watch error: {e}"),
        }
    }
    Ok(())
}

fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
