//! Renders kustomizations with the real `kustomize` and applies the result
//! to an API server by server-side apply, as `kubectl apply -k
//! --server-side` would.
//!
//! [`ensure_binary`] builds `kustomize` from Go modules if needed
//! (`tests/controlplane/build-kustomize.sh`, pinned in
//! `tests/controlplane/kustomize/go.mod`, cached under
//! `~/.cache/kubesink/kustomize/<version>/bin`); [`render`] runs `kustomize
//! build` on a directory and parses the objects; [`apply`] sends each one
//! as a server-side apply patch (field manager [`FIELD_MANAGER`]), finding
//! its resource and scope through discovery.
//!
//! `KUBESINK_KUSTOMIZE` may name a `kustomize` binary, skipping the build.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::{Client, ResourceExt};
use serde::Deserialize;

/// The field manager of every apply the tests make.
pub const FIELD_MANAGER: &str = "kubesink-tests";

/// Environment variable naming a prebuilt `kustomize`; when set, the build
/// script is not run.
pub const BIN_ENV: &str = "KUBESINK_KUSTOMIZE";

/// How many lines of a failing command's stderr an error quotes.
const STDERR_TAIL_LINES: usize = 30;

/// Errors building or running kustomize, or applying what it rendered.
#[derive(Debug, thiserror::Error)]
pub enum KustomizeError {
    /// A command (the build script or kustomize) could not be started.
    #[error("running {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A command exited with a failure.
    #[error("{program} {args} failed ({status}):\n{stderr_tail}")]
    Failed {
        /// The program.
        program: PathBuf,
        /// Its arguments, space-separated.
        args: String,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines it wrote to stderr.
        stderr_tail: String,
    },
    /// The build script succeeded but left no executable `kustomize`.
    #[error("{0} is missing or not executable after the build")]
    MissingBinary(PathBuf),
    /// kustomize's output (or a YAML file) is not a list of objects.
    #[error("document {index} of {source_name}: {message}")]
    Parse {
        /// What was parsed (a directory rendered, or a file).
        source_name: String,
        /// The document's index (0-based).
        index: usize,
        /// The cause.
        message: String,
    },
    /// Discovery does not know an object's kind.
    #[error("discovering the resource of {gvk} ({object}): {source}")]
    Discovery {
        /// `group/version Kind` of the object.
        gvk: String,
        /// `namespace/name` of the object.
        object: String,
        /// The cause.
        source: kube::Error,
    },
    /// The API server rejected an object.
    #[error("server-side apply of {kind} {object}: {source}")]
    Apply {
        /// The object's kind.
        kind: String,
        /// `namespace/name` of the object.
        object: String,
        /// The cause.
        source: kube::Error,
    },
    /// An object lacks what applying it needs.
    #[error("{object}: {message}")]
    Invalid {
        /// The object as far as it is known.
        object: String,
        /// What is missing.
        message: String,
    },
}

type Result<T, E = KustomizeError> = std::result::Result<T, E>;

/// The build script, `tests/controlplane/build-kustomize.sh`.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/build-kustomize.sh")
}

/// Returns the path of a `kustomize` binary: [`BIN_ENV`] if set, else the
/// cached build, running the build script when it is not cached yet.
pub async fn ensure_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(BIN_ENV) {
        let path = PathBuf::from(path);
        return check_executable(path);
    }
    let script = build_script();
    let stdout = run(Path::new("bash"), &[script.as_os_str().into()]).await?;
    let dir = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(|line| PathBuf::from(line.trim()))
        .ok_or_else(|| KustomizeError::MissingBinary(script.clone()))?;
    check_executable(dir.join("kustomize"))
}

fn check_executable(path: PathBuf) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let ok = std::fs::metadata(&path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    if ok {
        Ok(path)
    } else {
        Err(KustomizeError::MissingBinary(path))
    }
}

/// Runs `program args`, returning its stdout; a failure quotes its stderr.
async fn run(program: &Path, args: &[std::ffi::OsString]) -> Result<String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| KustomizeError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        return Err(KustomizeError::Failed {
            program: program.to_owned(),
            args: args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            status: output.status,
            stderr_tail: lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n"),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `kustomize build dir` and returns the rendered objects in
/// kustomize's order (namespaces and RBAC before workloads).
pub async fn render(dir: &Path) -> Result<Vec<DynamicObject>> {
    let kustomize = ensure_binary().await?;
    let yaml = run(&kustomize, &["build".into(), dir.as_os_str().into()]).await?;
    parse_objects(&yaml, &dir.display().to_string())
}

/// Parses a multi-document YAML stream into objects, skipping empty
/// documents; `source_name` names the stream in errors.
pub fn parse_objects(yaml: &str, source_name: &str) -> Result<Vec<DynamicObject>> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let parse_error = |message: String| KustomizeError::Parse {
            source_name: source_name.to_owned(),
            index,
            message,
        };
        let value = serde_json::Value::deserialize(document)
            .map_err(|e| parse_error(format!("not YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_json::from_value(value)
            .map_err(|e| parse_error(format!("not a Kubernetes object: {e}")))?;
        if object.types.is_none() {
            return Err(parse_error("apiVersion or kind is missing".into()));
        }
        objects.push(object);
    }
    Ok(objects)
}

/// `namespace/name` (or `name` for cluster-scoped objects).
pub fn object_name(object: &DynamicObject) -> String {
    match object.namespace() {
        Some(namespace) => format!("{namespace}/{}", object.name_any()),
        None => object.name_any(),
    }
}

/// The object's group, version and kind.
pub fn gvk_of(object: &DynamicObject) -> Result<GroupVersionKind> {
    let types = object
        .types
        .as_ref()
        .ok_or_else(|| KustomizeError::Invalid {
            object: object_name(object),
            message: "apiVersion or kind is missing".into(),
        })?;
    GroupVersionKind::try_from(types).map_err(|e| KustomizeError::Invalid {
        object: object_name(object),
        message: format!("apiVersion {}: {e}", types.api_version),
    })
}

/// Finds the objects of `kind` (and `name`, if given) in `objects`.
pub fn find<'a>(
    objects: &'a [DynamicObject],
    kind: &str,
    name: Option<&str>,
) -> Vec<&'a DynamicObject> {
    objects
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == kind))
        .filter(|o| name.is_none_or(|n| o.metadata.name.as_deref() == Some(n)))
        .collect()
}

/// Applies each object in order by server-side apply (field manager
/// [`FIELD_MANAGER`], conflicts forced, as `kubectl apply --server-side
/// --force-conflicts`), returning what the API server stored. An object
/// applied again without a field it had before loses that field.
pub async fn apply(client: &Client, objects: &[DynamicObject]) -> Result<Vec<DynamicObject>> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    apply_with(client, objects, &params).await
}

/// As [`apply`], but a server-side dry run: the API server validates and
/// admits every object and stores nothing.
pub async fn dry_run(client: &Client, objects: &[DynamicObject]) -> Result<Vec<DynamicObject>> {
    let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
    apply_with(client, objects, &params).await
}

async fn apply_with(
    client: &Client,
    objects: &[DynamicObject],
    params: &PatchParams,
) -> Result<Vec<DynamicObject>> {
    let mut stored = Vec::with_capacity(objects.len());
    for object in objects {
        let gvk = gvk_of(object)?;
        let name = object
            .metadata
            .name
            .clone()
            .ok_or_else(|| KustomizeError::Invalid {
                object: format!("a {}", gvk.kind),
                message: "metadata.name is missing".into(),
            })?;
        let (resource, capabilities) =
            kube::discovery::pinned_kind(client, &gvk)
                .await
                .map_err(|source| KustomizeError::Discovery {
                    gvk: format!("{}/{} {}", gvk.group, gvk.version, gvk.kind),
                    object: object_name(object),
                    source,
                })?;
        let api: Api<DynamicObject> = match (&capabilities.scope, object.namespace()) {
            (Scope::Namespaced, Some(namespace)) => {
                Api::namespaced_with(client.clone(), &namespace, &resource)
            }
            (Scope::Namespaced, None) => {
                return Err(KustomizeError::Invalid {
                    object: object_name(object),
                    message: format!("{} is namespaced but has no namespace", gvk.kind),
                });
            }
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        let result = api
            .patch(&name, params, &Patch::Apply(object))
            .await
            .map_err(|source| KustomizeError::Apply {
                kind: gvk.kind.clone(),
                object: object_name(object),
                source,
            })?;
        stored.push(result);
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documents_and_skips_empty_ones() {
        let yaml = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: r\n  namespace: a\nrules: []\n";
        let objects = parse_objects(yaml, "test").expect("parse");
        assert_eq!(objects.len(), 2);
        assert_eq!(object_name(&objects[0]), "a");
        assert_eq!(object_name(&objects[1]), "a/r");
        let gvk = gvk_of(&objects[1]).expect("gvk");
        assert_eq!(
            (gvk.group.as_str(), gvk.version.as_str(), gvk.kind.as_str()),
            ("rbac.authorization.k8s.io", "v1", "Role")
        );
        assert_eq!(find(&objects, "Role", Some("r")).len(), 1);
        assert!(find(&objects, "Role", Some("other")).is_empty());
    }

    #[test]
    fn a_document_without_kind_is_an_error_naming_it() {
        let yaml =
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nmetadata: {name: b}\n";
        let error = parse_objects(yaml, "deploy/").expect_err("no kind");
        let text = error.to_string();
        assert!(text.contains("document 1 of deploy/"), "{text}");
    }

    #[test]
    fn build_script_is_in_the_controlplane_folder() {
        let script = build_script();
        assert!(script.is_file(), "{}", script.display());
        let text = std::fs::read_to_string(&script).expect("read script");
        assert!(text.contains("sigs.k8s.io/kustomize/kustomize/v5"));
    }
}
