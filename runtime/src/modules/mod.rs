//! Sink modules from ConfigMaps, with hot reload.
//!
//! A sink configured with `module: configmap:NAME/KEY` takes its component
//! from the `binaryData` key KEY of ConfigMap NAME in kubesink's own
//! namespace ([`crate::namespace::own_namespace`]); a key ending in `.gz` is
//! gzip-decompressed. An optional `sha256:` on the sink pins the digest of
//! the (decompressed) component.
//!
//! [`watch::watch_modules`] starts one kube-runtime watcher per such sink, on
//! that one object (field selector `metadata.name=NAME`). Each version of
//! the key is decoded and checked here ([`decode`]: key present, size,
//! gzip, digest), then compiled, linked and initialized by the host off the
//! delivery path, and only then swapped into the sink's worker between two
//! batches ([`crate::pipeline::ModuleSlot::swap`]). A version that fails any
//! step is rejected with one error naming the sink, `namespace/name`, the
//! key and the cause, and the running version keeps running. A ConfigMap or
//! key that does not exist is reported the same way; the sink waits (its
//! records queue up, bounded) and starts when the key appears, while the
//! other sinks run normally.
//!
//! ConfigMaps hold at most 1 MiB (the whole object). A bigger component
//! can be stored gzip-compressed (`KEY.gz`), or given as a file path (a
//! mounted volume, an image layer) instead of a ConfigMap.

pub mod watch;

use std::fmt;
use std::io::Read;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kubesink_host::{HostError, ModuleSource, SinkSpec};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::config::{PlannedModule, SinkPlan};

pub(crate) use watch::watch_modules;
pub use watch::{ModuleStatus, ModuleWatcher};

pub use crate::config::ConfigMapRef;

impl ConfigMapRef {
    /// This key in `namespace`, for errors and logs.
    pub(crate) fn located(&self, namespace: &str) -> Located {
        Located {
            namespace: namespace.to_owned(),
            name: self.name.clone(),
            key: self.key.clone(),
        }
    }
}

/// A ConfigMap key with its namespace: `configmap NS/NAME key KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    /// kubesink's namespace.
    pub namespace: String,
    /// The ConfigMap's name.
    pub name: String,
    /// The key.
    pub key: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "configmap {}/{} key {}",
            self.namespace, self.name, self.key
        )
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Why a version of a ConfigMap module is not (or not yet) running.
#[derive(Debug, Error)]
pub(crate) enum Cause {
    /// The ConfigMap does not exist (or was deleted).
    #[error("the ConfigMap does not exist")]
    NotFound,
    /// The ConfigMap exists without the key under `binaryData`.
    #[error("the ConfigMap has no binaryData key `{key}`{}", no_key_hint(*in_data, keys))]
    NoKey {
        /// The key looked for.
        key: String,
        /// The key is under `data` (text) instead.
        in_data: bool,
        /// The binaryData keys it has.
        keys: Vec<String>,
    },
    /// A `.gz` key that does not decompress.
    #[error("the key ends in .gz but is not valid gzip: {0}")]
    Gzip(String),
    /// Over the sink's `limits.max_module`.
    #[error(
        "the component is {size}, over the sink's module size limit of {limit} bytes (limits.max_module)"
    )]
    TooLarge {
        /// `N bytes`, or `more than N bytes once decompressed`.
        size: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The digest differs from the sink's `sha256:` pin.
    #[error("sha256 mismatch: the component's digest is {actual}, the sink pins {expected}")]
    Digest {
        /// The pinned digest.
        expected: String,
        /// The digest of the component found.
        actual: String,
    },
    /// The host refused it: corrupt bytes, wrong world, or `init` failed.
    #[error("{}", host_cause(.0))]
    Load(HostError),
    /// The Kubernetes API refused or failed the watch (e.g. RBAC).
    #[error("watching the ConfigMap failed: {0}")]
    Api(String),
}

fn no_key_hint(in_data: bool, keys: &[String]) -> String {
    if in_data {
        " (it is under `data`; a component is binary and belongs under binaryData: `kubectl create configmap --from-file` puts it there)".into()
    } else if keys.is_empty() {
        " (it has no binaryData keys)".into()
    } else {
        format!(" (binaryData keys: {})", keys.join(", "))
    }
}

/// The host's error without the sink and origin it repeats.
fn host_cause(err: &HostError) -> String {
    match err {
        HostError::Compile { source, .. } => source.to_string(),
        HostError::World { reason, .. } => {
            format!("it does not implement kubesink:sink/sink-world: {reason}")
        }
        HostError::Init { source, .. } => format!("its init failed: {source}"),
        HostError::TooLarge { size, limit, .. } => format!(
            "the component is {size} bytes, over the sink's module size limit of {limit} bytes (limits.max_module)"
        ),
        other => other.to_string(),
    }
}

impl Cause {
    /// True when trying the same version again later may work (its `init`
    /// returned `retryable`, e.g. the database is down).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Cause::Load(e) if e.is_retryable())
    }
}

/// One error about a sink's ConfigMap module, naming the sink, the
/// namespace, the ConfigMap, the key and the cause.
#[derive(Debug, Error)]
#[error("sink '{sink}': {at}: {cause}")]
pub struct ModuleError {
    /// The sink.
    pub sink: String,
    /// The ConfigMap key.
    pub(crate) at: Located,
    /// What is wrong.
    #[source]
    pub(crate) cause: Cause,
}

/// A component taken from a ConfigMap key.
#[derive(Debug, Clone)]
pub(crate) struct Decoded {
    /// The component (decompressed).
    pub bytes: Arc<Vec<u8>>,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
    /// Bytes stored in the ConfigMap (compressed size for `.gz`).
    pub stored: usize,
}

/// Takes the component out of `configmap`'s key `cm.key`: decompresses a
/// `.gz` key (never past `limit` bytes), checks the size against `limit`
/// and the digest against `pin`.
pub(crate) fn decode(
    configmap: &ConfigMap,
    cm: &ConfigMapRef,
    limit: usize,
    pin: Option<&str>,
) -> Result<Decoded, Cause> {
    let Some(stored) = configmap.binary_data.as_ref().and_then(|m| m.get(&cm.key)) else {
        return Err(Cause::NoKey {
            key: cm.key.clone(),
            in_data: configmap
                .data
                .as_ref()
                .is_some_and(|d| d.contains_key(&cm.key)),
            keys: configmap
                .binary_data
                .as_ref()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        });
    };
    let stored = &stored.0;
    let bytes = if cm.gzipped() {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(stored.as_slice())
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Cause::Gzip(e.to_string()))?;
        if out.len() > limit {
            return Err(Cause::TooLarge {
                size: format!("more than {limit} bytes once decompressed"),
                limit,
            });
        }
        out
    } else {
        if stored.len() > limit {
            return Err(Cause::TooLarge {
                size: format!("{} bytes", stored.len()),
                limit,
            });
        }
        stored.clone()
    };
    let sha256 = sha256_hex(&bytes);
    if let Some(pin) = pin
        && !pin.eq_ignore_ascii_case(&sha256)
    {
        return Err(Cause::Digest {
            expected: pin.to_ascii_lowercase(),
            actual: sha256,
        });
    }
    Ok(Decoded {
        bytes: Arc::new(bytes),
        sha256,
        stored: stored.len(),
    })
}

/// A file module whose digest differs from its `sha256:` pin, or that
/// cannot be read to check it.
#[derive(Debug, Error)]
pub enum PinError {
    /// The digests differ.
    #[error(
        "sink '{sink}': {path}: sha256 mismatch: the file's digest is {actual}, the sink pins {expected}"
    )]
    Mismatch {
        /// The sink.
        sink: String,
        /// The file.
        path: String,
        /// The pinned digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// The file cannot be read.
    #[error("sink '{sink}': cannot read component {path}: {source}")]
    Read {
        /// The sink.
        sink: String,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The spec to load when the sink starts: for a file module, its file;
/// when the sink pins a `sha256`, the bytes are read and checked here, and
/// the host gets exactly the bytes that were checked (a file over the size
/// limit is left to the host, which refuses it without reading it).
/// `None` for a ConfigMap module: its watcher ([`watch_modules`]) loads
/// each version.
pub(crate) async fn file_spec(plan: &SinkPlan) -> Result<Option<SinkSpec>, PinError> {
    let PlannedModule::File(path) = &plan.module else {
        return Ok(None);
    };
    let spec = plan.spec.with_module(ModuleSource::Path(path.clone()));
    let Some(expected) = &plan.sha256 else {
        return Ok(Some(spec));
    };
    let origin = spec.module.origin();
    let read = |source| PinError::Read {
        sink: spec.name.clone(),
        path: origin.clone(),
        source,
    };
    let size = tokio::fs::metadata(path).await.map_err(read)?.len();
    if size > spec.limits.max_module_bytes as u64 {
        return Ok(Some(spec));
    }
    let bytes = Arc::new(tokio::fs::read(path).await.map_err(read)?);
    let actual = sha256_hex(&bytes);
    if !expected.eq_ignore_ascii_case(&actual) {
        return Err(PinError::Mismatch {
            sink: spec.name.clone(),
            path: origin,
            expected: expected.to_ascii_lowercase(),
            actual,
        });
    }
    Ok(Some(SinkSpec {
        module: ModuleSource::Bytes { origin, bytes },
        ..spec
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;
    use std::io::Write;

    fn cm(binary: &[(&str, Vec<u8>)], data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            binary_data: Some(
                binary
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.clone())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ConfigMap::default()
        }
    }

    fn r(spec: &str) -> ConfigMapRef {
        ConfigMapRef::parse(spec).expect("valid ref")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(bytes).expect("gzip");
        enc.finish().expect("gzip")
    }

    #[test]
    fn a_located_key_names_its_namespace() {
        assert_eq!(r("s/k").located("ks").to_string(), "configmap ks/s key k");
    }

    #[test]
    fn decodes_plain_and_gzip_keys_with_the_digest_of_the_component() {
        let component = b"\0asm\x0d\0\x01\0 some component".to_vec();
        let want = sha256_hex(&component);
        let map = cm(
            &[
                ("a.wasm", component.clone()),
                ("a.wasm.gz", gzip(&component)),
            ],
            &[],
        );
        let plain = decode(&map, &r("s/a.wasm"), 1 << 20, None).expect("plain");
        assert_eq!((*plain.bytes).clone(), component);
        assert_eq!(plain.sha256, want);
        let gz = decode(&map, &r("s/a.wasm.gz"), 1 << 20, Some(&want.to_uppercase()))
            .expect("gzip, pinned");
        assert_eq!((*gz.bytes).clone(), component);
        assert_eq!(gz.sha256, want);
        assert_ne!(gz.stored, component.len());
    }

    #[test]
    fn missing_key_names_the_keys_present_and_data_keys() {
        let map = cm(&[("other.wasm", vec![1])], &[("text.wasm", "x")]);
        let err = decode(&map, &r("s/mysql.wasm"), 100, None).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`mysql.wasm`") && msg.contains("other.wasm"),
            "{msg}"
        );
        let err = decode(&map, &r("s/text.wasm"), 100, None).unwrap_err();
        assert!(err.to_string().contains("under `data`"), "{err}");
        let err = decode(&ConfigMap::default(), &r("s/k"), 100, None).unwrap_err();
        assert!(err.to_string().contains("no binaryData keys"), "{err}");
    }

    #[test]
    fn size_limit_holds_for_plain_and_decompressed_keys() {
        let big = vec![7u8; 10_000];
        let map = cm(
            &[("big.wasm", big.clone()), ("big.wasm.gz", gzip(&big))],
            &[],
        );
        let err = decode(&map, &r("s/big.wasm"), 4096, None).unwrap_err();
        assert!(
            matches!(&err, Cause::TooLarge { limit: 4096, size } if size == "10000 bytes"),
            "{err:?}"
        );
        // Compressed it is tiny; decompression stops at the limit.
        assert!(map.binary_data.as_ref().unwrap()["big.wasm.gz"].0.len() < 4096);
        let err = decode(&map, &r("s/big.wasm.gz"), 4096, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("more than 4096 bytes once decompressed"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_gzip_and_digest_mismatch_are_named() {
        let map = cm(
            &[("a.wasm.gz", b"not gzip".to_vec()), ("a.wasm", vec![1, 2])],
            &[],
        );
        let err = decode(&map, &r("s/a.wasm.gz"), 100, None).unwrap_err();
        assert!(matches!(err, Cause::Gzip(_)), "{err:?}");
        let pin = "00".repeat(32);
        let err = decode(&map, &r("s/a.wasm"), 100, Some(&pin)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("sha256 mismatch")
                && msg.contains(&pin)
                && msg.contains(&sha256_hex(&[1, 2])),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_pinned_file_is_checked_and_loaded_from_the_checked_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("s.wasm");
        std::fs::write(&file, b"component bytes").expect("write");
        let plan = |pin: &str| {
            let text = format!(
                "sinks:\n  - {{name: s, module: '{}', sha256: '{pin}'}}\n",
                file.display()
            );
            crate::config::Config::parse(&text, "t")
                .expect("parse")
                .resolve("t")
                .expect("resolve")
                .sinks
                .remove(0)
        };
        let good = sha256_hex(b"component bytes");
        let spec = file_spec(&plan(&good.to_uppercase()))
            .await
            .expect("pinned")
            .expect("a file module");
        assert!(
            matches!(&spec.module, ModuleSource::Bytes { bytes, origin }
                if bytes.as_slice() == b"component bytes" && origin.ends_with("s.wasm")),
            "{:?}",
            spec.module
        );
        let wrong = "11".repeat(32);
        let err = file_spec(&plan(&wrong))
            .await
            .expect_err("mismatch")
            .to_string();
        assert!(
            err.contains("sink 's'")
                && err.contains("s.wasm")
                && err.contains(&wrong)
                && err.contains(&good),
            "{err}"
        );
    }

    #[test]
    fn module_error_names_sink_namespace_configmap_and_key() {
        let err = ModuleError {
            sink: "db".into(),
            at: r("sinks/mysql.wasm").located("kubesink"),
            cause: Cause::NotFound,
        };
        assert_eq!(
            err.to_string(),
            "sink 'db': configmap kubesink/sinks key mysql.wasm: the ConfigMap does not exist"
        );
    }
}
