//! Waiting on an observable condition, the one way the tests synchronize
//! with kubesink, the cluster and the databases (never a bare sleep).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] checks.
const POLL: Duration = Duration::from_millis(100);

/// Checks `check` every 100 ms until it returns `Ok(true)`, for at most
/// `limit`. An `Err` counts as "not yet" (a service may still be starting)
/// and the last one is reported if the time runs out, with `what` — what
/// was awaited.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    let mut last;
    loop {
        last = match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    match last {
        Some(e) => anyhow::bail!("timed out after {limit:?} waiting for {what}; last error: {e:#}"),
        None => anyhow::bail!("timed out after {limit:?} waiting for {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_once_true_and_names_what_timed_out() {
        let mut n = 0;
        eventually(Duration::from_secs(5), "third call", || {
            n += 1;
            let done = n >= 3;
            async move { Ok(done) }
        })
        .await
        .unwrap();
        assert_eq!(n, 3);

        let err = eventually(Duration::from_millis(250), "never", || async {
            anyhow::bail!("still down")
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("never") && err.contains("still down"), "{err}");
    }
}
