//! Leader election for `kubesink run --leader-elect`: several replicas run,
//! one leads through a `coordination.k8s.io/v1` Lease and only the leader
//! watches and delivers; the others stand by.
//!
//! The Lease is managed by the `kube-lease-manager` crate (server-side apply
//! with conflict detection, renewal before expiry, forced take-over of an
//! expired lease). On SIGTERM the leader delivers what is queued and then
//! releases the lease, so a standby takes over at once; a leader killed
//! with SIGKILL stops renewing and a standby takes over once the lease
//! expires (within the lease duration). A leader that loses the lease
//! (another replica took it after it could not renew) stops delivering and
//! exits, as controller-runtime's managers do; its restart stands by.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pipeline::backoff::Backoff;

/// Errors of leader election.
#[derive(Debug, Error)]
pub enum LeaderError {
    /// The lease duration is too short to renew before expiry.
    #[error("--lease-duration {0:?}: must be at least 2 s")]
    Duration(Duration),
    /// The lease manager stopped (its task failed or ended).
    #[error("leader election on Lease {namespace}/{name} stopped: {message}")]
    Stopped {
        namespace: String,
        name: String,
        message: String,
    },
}

/// Where the Lease is and who we are.
#[derive(Debug, Clone)]
pub struct LeaderOptions {
    /// The Lease's name (`--lease-name`).
    pub lease_name: String,
    /// The Lease's namespace (`--lease-namespace`, else kubesink's own).
    pub lease_namespace: String,
    /// How long a lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// This replica's identity (see [`identity`]).
    pub identity: String,
    /// The API server's URL, for messages.
    pub server: String,
}

/// This replica's identity: `POD_NAME`, else the hostname plus a random
/// suffix (two processes on one host must not share an identity).
pub fn identity() -> String {
    let host = std::env::var("HOSTNAME").ok().or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
    });
    identity_from(std::env::var("POD_NAME").ok(), host)
}

/// The rule of [`identity`], with its inputs given.
fn identity_from(pod: Option<String>, host: Option<String>) -> String {
    if let Some(pod) = pod.filter(|s| !s.is_empty()) {
        return pod;
    }
    let host = host
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "kubesink".to_owned());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// The whole seconds of a lease duration and the renewal margin before it
/// expires (a third of it, at least 1 s).
fn seconds(duration: Duration) -> Result<(u64, u64), LeaderError> {
    let secs = duration.as_secs();
    if secs < 2 {
        return Err(LeaderError::Duration(duration));
    }
    Ok((secs, (secs / 3).max(1)))
}

/// The leadership of this replica, once acquired.
pub struct Leadership {
    options: LeaderOptions,
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, kube_lease_manager::LeaseManagerError>>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("options", &self.options)
            .finish()
    }
}

impl Leadership {
    /// Stands by until this replica holds the Lease (creating it if it does
    /// not exist). While the API server cannot be reached, or the Lease
    /// cannot be read or written, retries with backoff, logging the first
    /// failure with the server and the Lease.
    pub async fn acquire(client: Client, options: LeaderOptions) -> Result<Self, LeaderError> {
        let (duration, grace) = seconds(options.lease_duration)?;
        let lease = format!("{}/{}", options.lease_namespace, options.lease_name);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut failing = false;
        let manager = loop {
            let built = LeaseManagerBuilder::new(client.clone(), &options.lease_name)
                .with_namespace(&options.lease_namespace)
                .with_identity(&options.identity)
                .with_duration(duration)
                .with_grace(grace)
                .build()
                .await;
            match built {
                Ok(m) => break m,
                Err(e) => {
                    if !failing {
                        tracing::warn!(server = %options.server, %lease, error = %e, "cannot reach the Lease for leader election; retrying with backoff");
                    }
                    failing = true;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        };
        tracing::info!(%lease, identity = %options.identity, "standing by for leadership");
        let (mut state, task) = manager.watch().await;
        if state.wait_for(|leader| *leader).await.is_err() {
            return Err(stopped(&options, task).await);
        }
        tracing::info!(%lease, identity = %options.identity, "became the leader");
        Ok(Self {
            options,
            state,
            task,
        })
    }

    /// Resolves when this replica no longer holds the Lease (or the lease
    /// manager stopped); returns the reason.
    pub async fn lost(&mut self) -> LeaderError {
        let lease = format!(
            "{}/{}",
            self.options.lease_namespace, self.options.lease_name
        );
        let ended = self.state.wait_for(|leader| !*leader).await.is_err();
        LeaderError::Stopped {
            namespace: self.options.lease_namespace.clone(),
            name: self.options.lease_name.clone(),
            message: if ended {
                "the lease manager ended".into()
            } else {
                format!("another replica holds Lease {lease} now")
            },
        }
    }

    /// Gives the Lease up so that a standby takes over at once (call after
    /// the queues are delivered).
    pub async fn release(self) {
        let lease = format!(
            "{}/{}",
            self.options.lease_namespace, self.options.lease_name
        );
        drop(self.state);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!(%lease, "released the lease"),
            Ok(Err(e)) => {
                tracing::warn!(%lease, error = %e, "could not release the lease; it expires after its duration")
            }
            Err(e) => {
                tracing::warn!(%lease, error = %e, "lease manager ended abnormally; the lease expires after its duration")
            }
        }
    }
}

async fn stopped(
    options: &LeaderOptions,
    task: JoinHandle<Result<LeaseManager, kube_lease_manager::LeaseManagerError>>,
) -> LeaderError {
    let message = match task.await {
        Ok(Ok(_)) => "the lease manager ended".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    LeaderError::Stopped {
        namespace: options.lease_namespace.clone(),
        name: options.lease_name.clone(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_seconds_and_renewal_margin() {
        assert_eq!(seconds(Duration::from_secs(15)).unwrap(), (15, 5));
        assert_eq!(seconds(Duration::from_secs(2)).unwrap(), (2, 1));
        assert!(matches!(
            seconds(Duration::from_millis(1500)),
            Err(LeaderError::Duration(_))
        ));
    }

    #[test]
    fn identity_is_the_pod_name_else_host_with_a_random_suffix() {
        assert_eq!(
            identity_from(Some("kubesink-0".into()), Some("h".into())),
            "kubesink-0"
        );
        let (a, b) = (
            identity_from(None, Some("node".into())),
            identity_from(Some(String::new()), Some("node".into())),
        );
        assert_ne!(a, b);
        assert!(
            a.starts_with("node-") && a.len() == "node-".len() + 8,
            "{a}"
        );
        assert!(identity_from(None, None).starts_with("kubesink-"));
    }
}
