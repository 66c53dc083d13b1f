//! `deploy/` against a real API server, with RBAC enforced: the manifests
//! are rendered by the real kustomize and applied server-side (so the API
//! server validates and admits every object), the example Secrets are
//! applied with the test MariaDB's credentials, and `kubesink run` runs out
//! of cluster with a TokenRequest token of the deploy ServiceAccount, the
//! Deployment's arguments and its environment resolved the way the kubelet
//! would (Secrets, downward API). Checked: the granted permissions are
//! exactly what the README promises (SelfSubjectAccessReview with that
//! token), rows land in MariaDB with only those permissions, and a revoked
//! permission is reported once, naming the resource and the 403, while
//! kubesink keeps running and recovers when it is granted again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, ServiceAccount};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::config::{
    AuthInfo, Cluster as KubeconfigCluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo,
    NamedCluster, NamedContext,
};
use kube::core::GroupVersionKind;
use kube::{Client, Config};
use kubesink_tests::binary::{Kubesink, kubesink_binary, supports_flag};
use kubesink_tests::cluster::{self, Cluster};
use kubesink_tests::mariadb::{self, TestDb};
use kubesink_tests::{guests, kustomize};
use serde_json::json;
use sqlx::MySqlPool;

/// The namespace, ServiceAccount and Lease name deploy/ uses.
const NAMESPACE: &str = "kubesink";
const SERVICE_ACCOUNT: &str = "kubesink";
const LEASE: &str = "kubesink";
/// The pod name the test gives kubesink through the downward API.
const POD_NAME: &str = "kubesink-test-0";
/// How long rows and log lines may take (a busy 2-core machine; the
/// watch backoff reaches 30 s between retries).
const WAIT: Duration = Duration::from_secs(120);

/// deploy/ applied to a fresh cluster, with everything needed to run
/// kubesink as the Deployment would.
pub(crate) struct Deployed {
    pub(crate) cluster: Cluster,
    /// The objects kustomize rendered, as applied.
    pub(crate) objects: Vec<DynamicObject>,
    pub(crate) db: TestDb,
    pub(crate) pool: MySqlPool,
    pub(crate) dir: tempfile::TempDir,
    /// A client with the ServiceAccount's token.
    pub(crate) sa_client: Client,
    pub(crate) binary: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    /// The configuration file kubesink reads (the ConfigMap's `config.yaml`).
    pub(crate) config_path: PathBuf,
}

impl Deployed {
    pub(crate) fn start_kubesink(&self, log_name: &str) -> Result<Kubesink> {
        Kubesink::start(
            &self.binary,
            &self.args,
            &self.env,
            &self.dir.path().join(log_name),
        )
    }

    pub(crate) fn admin(&self) -> Client {
        self.cluster.client()
    }

    pub(crate) async fn finish(self) -> Result<()> {
        self.pool.close().await;
        self.db.drop_database().await?;
        Ok(())
    }
}

/// Starts a cluster, installs KubeDL's TFJob CRD, applies deploy/ and the
/// example Secrets (MySQL pointed at a fresh test database), and prepares
/// kubesink's kubeconfig (a TokenRequest token), config file, arguments and
/// environment from the applied Deployment.
async fn deploy(db_prefix: &str) -> Result<Deployed> {
    let deploy_dir = guests::workspace_root().join("deploy");
    let objects = kustomize::render(&deploy_dir).await?;
    check_rendered_set(&objects)?;
    deploy_objects(db_prefix, objects).await
}

/// As [`deploy`], with `objects` (rendered manifests that include the
/// Deployment `kubesink/kubesink` and its namespace) instead of deploy/.
pub(crate) async fn deploy_objects(
    db_prefix: &str,
    objects: Vec<DynamicObject>,
) -> Result<Deployed> {
    let cluster = cluster::start().await?;
    let admin = cluster.client();
    cluster
        .install_crd(
            &guests::workspace_root().join("tests/fixtures/crds/training.kubedl.io_tfjobs.yaml"),
        )
        .await?;

    let deploy_dir = guests::workspace_root().join("deploy");
    kustomize::apply(&admin, &objects).await?;

    let deployment = deployment(&objects)?;
    let db = mariadb::fresh_database(db_prefix).await?;
    let pool = db.connect().await?;
    let secrets = example_secrets(&deploy_dir, &deployment, &db)?;
    kustomize::apply(&admin, &secrets).await?;

    let dir = tempfile::tempdir()?;
    let token = service_account_token(&admin, NAMESPACE, SERVICE_ACCOUNT).await?;
    let kubeconfig = dir.path().join("kubesink.kubeconfig");
    let sa_client =
        write_token_kubeconfig(&cluster, &kubeconfig, NAMESPACE, SERVICE_ACCOUNT, &token).await?;

    // The configuration file, as the API server serves the generated
    // ConfigMap the Deployment mounts.
    let container = main_container(&deployment)?;
    let (config_map, config_dir) = config_volume(&deployment)?;
    let config_text = Api::<ConfigMap>::namespaced(admin.clone(), NAMESPACE)
        .get(&config_map)
        .await
        .with_context(|| format!("ConfigMap {NAMESPACE}/{config_map}"))?
        .data
        .and_then(|d| d.get("config.yaml").cloned())
        .with_context(|| format!("ConfigMap {config_map} has no key config.yaml"))?;
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, &config_text)?;

    let binary = kubesink_binary()?;
    let args = run_args(
        &binary,
        container.args.as_deref().unwrap_or_default(),
        &config_dir,
        &config_path,
        &kubeconfig,
    )?;
    let mut env = container_env(&admin, NAMESPACE, POD_NAME, container).await?;
    // Writable paths the Deployment mounts as emptyDirs.
    let cache = dir.path().join("cache");
    for (key, value) in &mut env {
        if key == "KUBESINK_CACHE_DIR" {
            *value = cache.join("components").display().to_string();
        }
    }
    env.push(("HOME".into(), dir.path().display().to_string()));
    // The image ships the bundled sinks in /usr/share/kubesink/sinks; here
    // they come from the guest build.
    let mysql_wasm = guests::guest_wasm("kubesink-sink-mysql")?;
    let sink_dir = mysql_wasm.parent().context("guest dir")?;
    env.push(("KUBESINK_SINK_DIR".into(), sink_dir.display().to_string()));

    Ok(Deployed {
        cluster,
        objects,
        db,
        pool,
        dir,
        sa_client,
        binary,
        args,
        env,
        config_path,
    })
}

/// The rendered set is what deploy/README.md describes, all in namespace
/// `kubesink` except the cluster-scoped ones.
fn check_rendered_set(objects: &[DynamicObject]) -> Result<()> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("?"),
                kustomize::object_name(o)
            )
        })
        .collect();
    kinds.sort();
    let config_map = kinds
        .iter()
        .find(|k| k.starts_with("ConfigMap kubesink/kubesink-config-"))
        .cloned()
        .context("no generated ConfigMap kubesink-config-<hash>")?;
    let mut want = vec![
        "ClusterRole kubesink".to_owned(),
        "ClusterRoleBinding kubesink".to_owned(),
        config_map,
        "Deployment kubesink/kubesink".to_owned(),
        "Namespace kubesink".to_owned(),
        "Role kubesink/kubesink".to_owned(),
        "RoleBinding kubesink/kubesink".to_owned(),
        "ServiceAccount kubesink/kubesink".to_owned(),
    ];
    want.sort();
    ensure!(kinds == want, "kustomize build deploy/ gave {kinds:#?}");
    Ok(())
}

pub(crate) fn deployment(objects: &[DynamicObject]) -> Result<Deployment> {
    let object = kustomize::find(objects, "Deployment", Some("kubesink"))
        .into_iter()
        .next()
        .context("deploy/ renders no Deployment kubesink")?;
    Ok(serde_json::from_value(serde_json::to_value(object)?)?)
}

pub(crate) fn main_container(
    deployment: &Deployment,
) -> Result<&k8s_openapi::api::core::v1::Container> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == "kubesink"))
        .context("the Deployment has no container kubesink")
}

/// The ConfigMap mounted as the config volume and where it is mounted.
fn config_volume(deployment: &Deployment) -> Result<(String, String)> {
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .context("the Deployment has no pod spec")?;
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.config_map.is_some())
        .context("the Deployment mounts no ConfigMap")?;
    let config_map = volume
        .config_map
        .as_ref()
        .map(|c| c.name.clone())
        .context("config volume")?;
    let mount = main_container(deployment)?
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .map(|m| m.mount_path.clone())
        .context("the config volume is not mounted")?;
    Ok((config_map, mount))
}

/// deploy/secrets.example.yaml with the values of the keys the Deployment
/// maps to `MYSQL_*` replaced by the test database's; every key the
/// Deployment references must exist in the example.
fn example_secrets(
    deploy_dir: &Path,
    deployment: &Deployment,
    db: &TestDb,
) -> Result<Vec<DynamicObject>> {
    let path = deploy_dir.join("secrets.example.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let mut secrets = kustomize::parse_objects(&text, &path.display().to_string())?;
    let db_env: BTreeMap<&str, String> = db.kubedl_env().into_iter().collect();
    let container = main_container(deployment)?;
    for env in container.env.iter().flatten() {
        let Some(reference) = env
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        else {
            continue;
        };
        let secret = secrets
            .iter_mut()
            .find(|s| s.metadata.name.as_deref() == Some(reference.name.as_str()))
            .with_context(|| {
                format!(
                    "env {} refers to Secret {} which secrets.example.yaml lacks",
                    env.name, reference.name
                )
            })?;
        let data = secret
            .data
            .get_mut("stringData")
            .and_then(|d| d.as_object_mut())
            .with_context(|| format!("example Secret {} has no stringData", reference.name))?;
        ensure!(
            data.contains_key(&reference.key),
            "env {} refers to key {} of Secret {}, which the example lacks",
            env.name,
            reference.key,
            reference.name
        );
        if let Some(value) = db_env.get(env.name.as_str()) {
            data.insert(reference.key.clone(), json!(value));
        }
    }
    Ok(secrets)
}

/// A token of ServiceAccount `namespace/account` from the TokenRequest API
/// (what a pod's projected token would be).
pub(crate) async fn service_account_token(
    admin: &Client,
    namespace: &str,
    account: &str,
) -> Result<String> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    Ok(Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {namespace}/{account}"))?
        .status
        .context("TokenRequest answered without a status")?
        .token)
}

/// Writes a kubeconfig authenticating as ServiceAccount `namespace/account`
/// with `token` (default namespace `namespace`) and returns a client built
/// from the file.
pub(crate) async fn write_token_kubeconfig(
    cluster: &Cluster,
    path: &Path,
    namespace: &str,
    account: &str,
    token: &str,
) -> Result<Client> {
    let user = format!("system:serviceaccount:{namespace}:{account}");
    let kubeconfig = Kubeconfig {
        clusters: vec![NamedCluster {
            name: "kubesink-test".into(),
            cluster: Some(KubeconfigCluster {
                server: Some(cluster.base_url()),
                certificate_authority: Some(cluster.ca_cert_path().display().to_string()),
                ..KubeconfigCluster::default()
            }),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.clone(),
            auth_info: Some(AuthInfo {
                token: Some(token.to_owned().into()),
                ..AuthInfo::default()
            }),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: "kubesink".into(),
            context: Some(Context {
                cluster: "kubesink-test".into(),
                user: Some(user),
                namespace: Some(namespace.into()),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some("kubesink".into()),
        kind: Some("Config".into()),
        api_version: Some("v1".into()),
        ..Kubeconfig::default()
    };
    std::fs::write(path, serde_yaml::to_string(&kubeconfig)?)?;
    let read = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(read, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// The Deployment's arguments for an out-of-cluster run: the config path
/// mapped to the local file, `--listen` to a free loopback port, a
/// `--kubeconfig` added. A flag the binary does not have is an error: the
/// Deployment would crash-loop on it.
fn run_args(
    binary: &Path,
    deployment_args: &[String],
    config_dir: &str,
    config_path: &Path,
    kubeconfig: &Path,
) -> Result<Vec<String>> {
    let mut args = Vec::new();
    let subcommand = deployment_args
        .first()
        .context("the Deployment has no args")?;
    ensure!(subcommand == "run", "the Deployment runs `{subcommand}`");
    args.push(subcommand.clone());
    for arg in &deployment_args[1..] {
        let (flag, value) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (arg.as_str(), None),
        };
        ensure!(
            flag.starts_with("--"),
            "Deployment arg `{arg}`: write flags as --flag=value"
        );
        ensure!(
            supports_flag(binary, "run", flag)?,
            "the Deployment passes {flag}, which `kubesink run` does not have"
        );
        let value = match (flag, value) {
            ("--config", Some(v)) => {
                ensure!(
                    v.starts_with(config_dir),
                    "--config {v} is not in the mounted ConfigMap {config_dir}"
                );
                Some(config_path.display().to_string())
            }
            ("--listen", Some(_)) => Some("127.0.0.1:0".to_owned()),
            (_, v) => v.map(str::to_owned),
        };
        args.push(match value {
            Some(v) => format!("{flag}={v}"),
            None => flag.to_owned(),
        });
    }
    args.push(format!("--kubeconfig={}", kubeconfig.display()));
    Ok(args)
}

/// The container's environment as the kubelet would give it: literal
/// values, the downward API (pod name and namespace), Secret keys read
/// from the API server (optional ones may be absent).
pub(crate) async fn container_env(
    admin: &Client,
    namespace: &str,
    pod_name: &str,
    container: &k8s_openapi::api::core::v1::Container,
) -> Result<Vec<(String, String)>> {
    let secrets = Api::<Secret>::namespaced(admin.clone(), namespace);
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        if let Some(value) = &var.value {
            env.push((var.name.clone(), value.clone()));
            continue;
        }
        let from = var
            .value_from
            .as_ref()
            .with_context(|| format!("env {} has neither value nor valueFrom", var.name))?;
        if let Some(field) = &from.field_ref {
            let value = match field.field_path.as_str() {
                "metadata.name" => pod_name,
                "metadata.namespace" => namespace,
                other => bail!("env {}: fieldRef {other} is not resolved here", var.name),
            };
            env.push((var.name.clone(), value.to_owned()));
        } else if let Some(reference) = &from.secret_key_ref {
            let secret = secrets
                .get_opt(&reference.name)
                .await
                .with_context(|| format!("Secret {namespace}/{}", reference.name))?;
            let value = secret
                .and_then(|s| s.data)
                .and_then(|d| d.get(&reference.key).cloned());
            match value {
                Some(bytes) => env.push((var.name.clone(), String::from_utf8(bytes.0)?)),
                None if reference.optional == Some(true) => {}
                None => bail!(
                    "env {}: Secret {namespace}/{} has no key {}",
                    var.name,
                    reference.name,
                    reference.key
                ),
            }
        } else {
            bail!("env {}: valueFrom kind is not resolved here", var.name);
        }
    }
    Ok(env)
}

/// Whether the ServiceAccount may do `verb` on `resource` (group `group`,
/// namespace `namespace`, object `name`), asked of the real authorizer with
/// the ServiceAccount's own token.
async fn may(
    sa: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(str::to_owned),
                name: name.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(sa.clone())
        .create(&PostParams::default(), &review)
        .await
        .context("SelfSubjectAccessReview")?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Polls `may` until it answers `want` (RBAC changes reach the authorizer
/// through an informer, a moment after the write).
async fn wait_may(sa: &Client, want: bool, verb: &str, group: &str, resource: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while may(sa, verb, group, resource, None, None).await? != want {
        ensure!(
            std::time::Instant::now() < deadline,
            "{verb} {resource}: the authorizer never answered allowed={want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// One row of `sql` as its columns joined by `|` (NULL as `NULL`), or
/// `None` when there is no row.
async fn row(pool: &MySqlPool, sql: &str) -> Result<Option<String>> {
    use sqlx::Row;
    let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_optional(pool)
        .await
        .with_context(|| sql.to_owned())?;
    row.map(|r| {
        r.try_get::<Option<String>, _>(0)
            .map(|v| v.unwrap_or_else(|| "NULL".into()))
            .with_context(|| format!("{sql}: the first column is not text"))
    })
    .transpose()
}

/// Waits until `sql` (one `CONCAT_WS('|', ...)` column) returns `want`.
async fn wait_row(pool: &MySqlPool, sql: &str, want: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + WAIT;
    let mut last = None;
    while std::time::Instant::now() < deadline {
        // The sink creates its tables at init: errors before that are fine.
        last = row(pool, sql).await.ok().flatten();
        if last.as_deref() == Some(want) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{sql}: wanted {want:?}, last saw {last:?}")
}

fn tfjob_api(client: Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client,
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("training.kubedl.io", "v1alpha1", "TFJob"),
            "tfjobs",
        ),
    )
}

/// Creates TFJob `name` in `default` and its pod `<name>-worker-0`;
/// returns the job's uid.
async fn create_tfjob_and_pod(admin: &Client, name: &str) -> Result<String> {
    let job: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob",
        "metadata": {"name": name},
        "spec": {"tfReplicaSpecs": {"Worker": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "tensorflow", "image": "tf:2"}]}}}}},
    }))?;
    let job = tfjob_api(admin.clone())
        .create(&PostParams::default(), &job)
        .await
        .with_context(|| format!("create TFJob {name}"))?;
    let uid = job.metadata.uid.context("TFJob uid")?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-worker-0"), "labels": {"replica-type": "worker"},
            "ownerReferences": [{"apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob",
                "name": name, "uid": uid, "controller": true}]},
        "spec": {"containers": [{"name": "tensorflow", "image": "tf:2"}]},
    }))?;
    Api::<Pod>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("create pod {name}-worker-0"))?;
    Ok(uid)
}

/// Whether a log line reports a request refused by RBAC (a 403: the API
/// server's message and reason both say "forbidden"; a bare "403" could be
/// part of a digest).
fn is_refusal(line: &str) -> bool {
    line.to_ascii_lowercase().contains("forbidden")
}

/// The log lines that report a watch failing on `plural` with a 403.
fn forbidden_lines(log: &str, plural: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(&format!("{plural} (")))
        .filter(|l| is_refusal(l))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mariadb_deploy_manifests_grant_exactly_what_kubesink_needs() -> Result<()> {
    let deployed = deploy("deploy_ok").await?;
    check_grants_and_delivery(deployed).await
}

/// What deploy/README.md promises of a deployment (also the Helm chart's,
/// `helm.rs`): the RBAC grants exactly what kubesink needs, asked of the
/// real authorizer; kubesink delivers with only those grants, holds the
/// Lease, answers its probes and exits 0 on SIGTERM.
pub(crate) async fn check_grants_and_delivery(deployed: Deployed) -> Result<()> {
    let sa = &deployed.sa_client;

    // What the README says the RBAC grants, and nothing around it, asked
    // of the real authorizer with the ServiceAccount's token.
    // One line per question: `+` allowed or `-` refused, the verb,
    // `group/resource` (core: `/resource`), and `namespace/name` where it
    // applies (either may be empty).
    let cases = [
        "+ list batch/jobs",
        "+ watch batch/jobs",
        "+ watch training.kubedl.io/tfjobs",
        "+ list kubeflow.org/pytorchjobs",
        "+ watch inference.kubedl.io/elasticbatchjobs",
        "+ list /pods",
        "+ watch /events",
        "+ get /configmaps kubesink/kubesink-sinks",
        "+ watch /configmaps kubesink/",
        "+ create /configmaps kubesink/",
        "+ get /configmaps kubesink/kubesink-checkpoints",
        "+ patch /configmaps kubesink/kubesink-checkpoints",
        "+ create coordination.k8s.io/leases kubesink/",
        "+ get coordination.k8s.io/leases kubesink/kubesink",
        "+ update coordination.k8s.io/leases kubesink/kubesink",
        "+ patch coordination.k8s.io/leases kubesink/kubesink",
        // Not granted:
        "- get /pods default/x",
        "- create /pods default/",
        "- delete batch/jobs default/x",
        "- patch training.kubedl.io/tfjobs default/x",
        "- list /secrets kubesink/",
        "- get /secrets kubesink/kubesink-mysql",
        "- list /configmaps default/",
        "- list /configmaps",
        "- update /configmaps kubesink/kubesink-sinks",
        "- patch /configmaps kubesink/kubesink-sinks",
        "- create /configmaps default/",
        "- update coordination.k8s.io/leases kubesink/other",
        "- delete coordination.k8s.io/leases kubesink/kubesink",
        "- create coordination.k8s.io/leases default/",
        "- list /nodes",
        "- create /events default/",
    ];
    let mut wrong = Vec::new();
    for case in cases {
        let words: Vec<&str> = case.split_whitespace().collect();
        let (want, verb, resource, at) = match words.as_slice() {
            [sign, verb, resource] => (*sign == "+", *verb, *resource, None),
            [sign, verb, resource, at] => (*sign == "+", *verb, *resource, Some(*at)),
            _ => bail!("malformed case {case:?}"),
        };
        let (group, resource) = resource.rsplit_once('/').context("group/resource")?;
        let non_empty = |s: &'static str| Some(s).filter(|s| !s.is_empty());
        let (namespace, name) = match at {
            Some(at) => {
                let (ns, name) = at.split_once('/').context("namespace/name")?;
                (non_empty(ns), non_empty(name))
            }
            None => (None, None),
        };
        let got = may(sa, verb, group, resource, namespace, name).await?;
        if got != want {
            wrong.push(format!("{case}: allowed={got}"));
        }
    }
    ensure!(
        wrong.is_empty(),
        "RBAC differs from the README:\n{}",
        wrong.join("\n")
    );

    // kubesink with exactly those permissions: a TFJob, its pod, an event
    // and a batch/v1 Job land in MariaDB.
    let admin = deployed.admin();
    let mut kubesink = deployed.start_kubesink("kubesink.log")?;
    let job_uid = create_tfjob_and_pod(&admin, "mnist").await?;
    let batch: Job = serde_json::from_value(json!({
        "metadata": {"name": "etl"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox"}]}}},
    }))?;
    Api::<Job>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &batch)
        .await
        .context("create Job etl")?;
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "mnist-worker-0.scheduled"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "mnist-worker-0", "apiVersion": "v1"},
        "reason": "Scheduled", "message": "assigned to node-1", "type": "Normal", "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "source": {"component": "default-scheduler"},
    }))?;
    Api::<Event>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &event)
        .await
        .context("create Event")?;

    let pool = &deployed.pool;
    wait_row(
        pool,
        "SELECT CONCAT_WS('|', kind, status, is_in_etcd) FROM job_info WHERE name = 'mnist'",
        "TFJob|Created|1",
    )
    .await?;
    wait_row(
        pool,
        "SELECT CONCAT_WS('|', kind, is_in_etcd) FROM job_info WHERE name = 'etl'",
        "Job|1",
    )
    .await?;
    wait_row(
        pool,
        "SELECT CONCAT_WS('|', job_id, replica_type, image) FROM replica_info WHERE name = 'mnist-worker-0'",
        &format!("{job_uid}|worker|tf:2"),
    )
    .await?;
    wait_row(
        pool,
        "SELECT CONCAT_WS('|', reason, count) FROM event_info WHERE name = 'mnist-worker-0.scheduled'",
        "Scheduled|1",
    )
    .await?;

    // Nothing it needs was refused.
    let log = kubesink.log();
    let refused: Vec<&str> = log.lines().filter(|l| is_refusal(l)).collect();
    ensure!(
        refused.is_empty(),
        "kubesink was refused with the deploy RBAC:\n{}",
        refused.join("\n")
    );

    // What the Deployment's flags add, where this kubesink has them.
    let has = |flag: &str| {
        deployed
            .args
            .iter()
            .any(|a| a.split('=').next() == Some(flag))
    };
    if has("--leader-elect") {
        let leases = Api::<Lease>::namespaced(admin.clone(), NAMESPACE);
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let holder = leases
                .get_opt(LEASE)
                .await?
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity);
            if holder.as_deref() == Some(POD_NAME) {
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "Lease {NAMESPACE}/{LEASE} held by {holder:?}, not {POD_NAME}; log:\n{}",
                kubesink.tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if has("--listen") {
        let line = kubesink
            .wait_for_log("its listen address", WAIT, |l| {
                l.contains("listening on http://")
            })
            .await?;
        let addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .context("listen address")?
            .to_owned();
        for path in ["/healthz", "/readyz"] {
            wait_http_ok(&addr, path).await?;
        }
    }
    eprintln!("deploy test: ran kubesink {}", deployed.args.join(" "));

    ensure!(
        kubesink.exited()?.is_none(),
        "kubesink exited:\n{}",
        kubesink.tail(40)
    );
    let status = kubesink.terminate(Duration::from_secs(45)).await?;
    ensure!(
        status.success(),
        "kubesink exited with {status} after SIGTERM"
    );
    deployed.finish().await
}

/// Waits until `GET http://addr/path` answers 200.
async fn wait_http_ok(addr: &str, path: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = std::time::Instant::now() + WAIT;
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            if stream.write_all(request.as_bytes()).await.is_ok() {
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer).await;
                last = String::from_utf8_lossy(&answer).into_owned();
                if last.starts_with("HTTP/1.0 200") || last.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("GET {path} on {addr} never answered 200; last: {last:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mariadb_deploy_missing_pods_permission_is_reported_and_recovers() -> Result<()> {
    let deployed = deploy("deploy_403").await?;
    let admin = deployed.admin();

    // The ClusterRole without `pods`.
    let role = kustomize::find(&deployed.objects, "ClusterRole", Some("kubesink"))
        .into_iter()
        .next()
        .context("no ClusterRole kubesink")?
        .clone();
    let mut revoked = role.clone();
    let rules = revoked
        .data
        .get_mut("rules")
        .and_then(|r| r.as_array_mut())
        .context("ClusterRole rules")?;
    for rule in rules.iter_mut() {
        if let Some(resources) = rule.get_mut("resources").and_then(|r| r.as_array_mut()) {
            resources.retain(|r| r != "pods");
        }
    }
    rules.retain(|rule| {
        rule.get("resources")
            .and_then(|r| r.as_array())
            .is_some_and(|r| !r.is_empty())
    });
    kustomize::apply(&admin, std::slice::from_ref(&revoked)).await?;
    wait_may(&deployed.sa_client, false, "list", "", "pods").await?;
    wait_may(&deployed.sa_client, true, "list", "", "events").await?;

    let job_uid = create_tfjob_and_pod(&admin, "mnist").await?;
    let mut kubesink = deployed.start_kubesink("kubesink.log")?;
    let reported = kubesink
        .wait_for_log("the pods watch refused", WAIT, |l| {
            !forbidden_lines(l, "pods").is_empty()
        })
        .await?;
    assert!(
        reported.contains("pods (v1)") && reported.contains("code: 403"),
        "{reported}"
    );
    // Everything else keeps flowing.
    wait_row(
        &deployed.pool,
        "SELECT CONCAT_WS('|', kind, is_in_etcd) FROM job_info WHERE name = 'mnist'",
        "TFJob|1",
    )
    .await?;
    // Retries with backoff (0.8 s, 1.6 s, 3.2 s, ...) are not reported again.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let log = kubesink.log();
    let lines = forbidden_lines(&log, "pods");
    ensure!(
        lines.len() == 1,
        "wanted one report of the refused pods watch, got {}:\n{}",
        lines.len(),
        lines.join("\n")
    );
    ensure!(
        forbidden_lines(&log, "events").is_empty() && forbidden_lines(&log, "jobs").is_empty(),
        "only pods were revoked:\n{log}"
    );
    ensure!(
        kubesink.exited()?.is_none(),
        "kubesink exited:\n{}",
        kubesink.tail(40)
    );
    assert_eq!(
        row(
            &deployed.pool,
            "SELECT CAST(COUNT(*) AS CHAR) FROM replica_info WHERE name = 'mnist-worker-0'"
        )
        .await?
        .as_deref(),
        Some("0")
    );

    // Granted again: the pod arrives without a restart.
    kustomize::apply(&admin, std::slice::from_ref(&role)).await?;
    wait_may(&deployed.sa_client, true, "list", "", "pods").await?;
    wait_row(
        &deployed.pool,
        "SELECT CONCAT_WS('|', job_id, is_in_etcd) FROM replica_info WHERE name = 'mnist-worker-0'",
        &format!("{job_uid}|1"),
    )
    .await?;
    let recovered = kubesink
        .wait_for_log("the pods watch recovering", WAIT, |l| {
            l.contains("pods (v1)") && l.contains("watching again")
        })
        .await?;
    eprintln!("deploy test: reported {reported:?}, then {recovered:?}");
    let status = kubesink.terminate(Duration::from_secs(45)).await?;
    ensure!(
        status.success(),
        "kubesink exited with {status} after SIGTERM"
    );
    deployed.finish().await
}

/// The same deployment with the mysql sink loaded from a ConfigMap in
/// kubesink's namespace (`module: configmap:kubesink-sinks/mysql.wasm.gz`,
/// as `just configmap` packages it) instead of the image: the Role's
/// ConfigMap grant is enough to read and watch it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mariadb_deploy_sink_from_a_configmap_works_with_the_granted_rbac() -> Result<()> {
    use std::io::Write as _;
    let deployed = deploy("deploy_cm").await?;
    let admin = deployed.admin();

    let wasm = std::fs::read(guests::guest_wasm("kubesink-sink-mysql")?)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&wasm)?;
    let gz = gz.finish()?;
    let sinks = ConfigMap {
        metadata: kube::core::ObjectMeta {
            name: Some("kubesink-sinks".into()),
            ..Default::default()
        },
        binary_data: Some(BTreeMap::from([(
            "mysql.wasm.gz".to_owned(),
            ByteString(gz),
        )])),
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &sinks)
        .await
        .context("create ConfigMap kubesink/kubesink-sinks")?;
    let config = std::fs::read_to_string(&deployed.config_path)?;
    ensure!(
        config.matches("module: builtin:mysql").count() == 1,
        "deploy/config.yaml should load the mysql sink once as builtin:mysql:\n{config}"
    );
    std::fs::write(
        &deployed.config_path,
        config.replace(
            "module: builtin:mysql",
            "module: configmap:kubesink-sinks/mysql.wasm.gz",
        ),
    )?;

    let mut kubesink = deployed.start_kubesink("kubesink.log")?;
    let job_uid = create_tfjob_and_pod(&admin, "mnist").await?;
    wait_row(
        &deployed.pool,
        "SELECT CONCAT_WS('|', job_id, is_in_etcd) FROM replica_info WHERE name = 'mnist-worker-0'",
        &format!("{job_uid}|1"),
    )
    .await?;
    let log = kubesink.log();
    let refused: Vec<&str> = log.lines().filter(|l| is_refusal(l)).collect();
    ensure!(
        refused.is_empty(),
        "kubesink was refused with the deploy RBAC:\n{}",
        refused.join("\n")
    );
    ensure!(
        kubesink.exited()?.is_none(),
        "kubesink exited:\n{}",
        kubesink.tail(40)
    );
    let status = kubesink.terminate(Duration::from_secs(45)).await?;
    ensure!(
        status.success(),
        "kubesink exited with {status} after SIGTERM"
    );
    deployed.finish().await
}
