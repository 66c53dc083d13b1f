//! Where objects come from: [`replay`] (files and stdin) and the live
//! [`watch`] of a cluster (with [`jobs`] reconciliation across the job
//! resources, and [`leader`] election among replicas). Every source turns objects into entries with
//! the same [`Normalizer`], so a replay delivers exactly what the live
//! source would.

pub(crate) mod jobs;
pub(crate) mod leader;
pub(crate) mod object;
pub mod replay;
pub(crate) mod split;
pub mod watch;

use kubesink_normalize::record::{Change, Entry, Timestamp};
use serde_json::Value;

/// Turns objects into entries with the runtime's normalization options.
#[derive(Debug, Clone, Default)]
pub struct Normalizer {
    pub options: kubesink_normalize::Options,
}

impl Normalizer {
    /// With `region` overriding the tenancy annotation's (`--region`).
    pub fn with_region(region: Option<String>) -> Self {
        Self {
            options: kubesink_normalize::Options {
                region,
                ..Default::default()
            },
        }
    }

    /// Normalizes one object into an `applied` change, or `removed` at
    /// `removed_at`. `Ok(None)` for kinds kubesink does not watch; errors
    /// name the object and the field.
    pub fn normalize(
        &self,
        object: &Value,
        removed_at: Option<Timestamp>,
    ) -> Result<Option<Entry>, String> {
        Self::change(
            kubesink_normalize::normalize(object, &self.options),
            removed_at,
        )
    }

    /// [`Self::normalize`] for an object's JSON text of a known
    /// `apiVersion` and `kind` (see [`kubesink_normalize::normalize_json`]).
    pub fn normalize_json(
        &self,
        json: &str,
        api_version: &str,
        kind: &str,
        removed_at: Option<Timestamp>,
    ) -> Result<Option<Entry>, String> {
        Self::change(
            kubesink_normalize::normalize_json(json, api_version, kind, &self.options),
            removed_at,
        )
    }

    fn change(
        record: Result<
            Option<kubesink_normalize::record::Record>,
            kubesink_normalize::NormalizeError,
        >,
        removed_at: Option<Timestamp>,
    ) -> Result<Option<Entry>, String> {
        match record {
            Ok(Some(record)) => Ok(Some(match removed_at {
                Some(at) => Change::removed(record, at),
                None => Change::applied(record),
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The current time as a record timestamp.
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos(),
    }
}
