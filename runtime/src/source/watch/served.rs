//! Whether the API server serves a resource that was not served when its
//! watch listed it (a training-job CRD not installed): asked of the
//! group-version's discovery document (`GET /apis/<group>/<version>`,
//! readable by every authenticated client), fetched at most once per
//! [`FRESH`] for all the resources of that group-version. Twelve watches
//! of missing CRDs used to list each their resource every 30 s, two
//! thirds of an idle kubesink's CPU; they now share about one request per
//! group-version per 15–30 s.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::ApiResource;
use tokio::sync::Mutex;

/// How long a discovery answer is reused.
pub(super) const FRESH: Duration = Duration::from_secs(15);

/// What the discovery document of a group-version said.
#[derive(Debug, Clone)]
enum Answer {
    /// The plurals it serves (empty: the group-version is not served).
    Served(HashSet<String>),
    /// It could not be read: the listing is left to tell.
    Unknown,
}

impl Answer {
    fn serves(&self, plural: &str) -> bool {
        match self {
            Answer::Served(plurals) => plurals.contains(plural),
            Answer::Unknown => true,
        }
    }
}

/// Discovery answers shared by the watches of one API server.
pub(super) struct Served {
    client: Client,
    answers: Mutex<HashMap<String, (Instant, Answer)>>,
}

impl Served {
    pub(super) fn new(client: Client) -> Self {
        Self {
            client,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `r` looks served now. `true` when the discovery document
    /// cannot be read (the watch's listing then says). Callers asking at
    /// the same time wait for one request and share its answer.
    pub(super) async fn serves(&self, r: &ApiResource) -> bool {
        let mut answers = self.answers.lock().await;
        if let Some((at, answer)) = answers.get(&r.api_version)
            && at.elapsed() < FRESH
        {
            return answer.serves(&r.plural);
        }
        let answer = match self.client.list_api_group_resources(&r.api_version).await {
            Ok(list) => Answer::Served(list.resources.into_iter().map(|r| r.name).collect()),
            Err(kube::Error::Api(s)) if s.code == 404 => Answer::Served(HashSet::new()),
            Err(e) => {
                tracing::debug!(api_version = %r.api_version, error = %e, "discovery failed; listing instead");
                Answer::Unknown
            }
        };
        let serves = answer.serves(&r.plural);
        answers.insert(r.api_version.clone(), (Instant::now(), answer));
        serves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_serves_its_plurals_and_an_unknown_one_everything() {
        let served = Answer::Served(["tfjobs".to_owned()].into());
        assert!(served.serves("tfjobs"));
        assert!(!served.serves("mpijobs"));
        assert!(!Answer::Served(HashSet::new()).serves("tfjobs"));
        assert!(Answer::Unknown.serves("tfjobs"));
    }
}
