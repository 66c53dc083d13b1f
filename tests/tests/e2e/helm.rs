//! The Helm chart `deploy/helm/kubesink` with a real `helm`
//! (helm.sh/helm/v3, pinned in `tests/controlplane/helm/go.mod`, built from
//! Go modules and cached by `tests/controlplane/build-tool.sh helm`;
//! `KUBESINK_HELM` may name a prebuilt binary): `helm lint` and `helm
//! template` for several value sets, the default render compared object by
//! object with the kustomize base, every render applied server-side to a
//! real API server, and kubesink run with the chart's ServiceAccount token
//! exactly as `deploy.rs` runs the kustomize base.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::DynamicObject;
use kubesink_tests::binary::{kubesink_binary, supports_flag};
use kubesink_tests::{guests, kustomize};
use serde_json::{Value, json};

use crate::deploy;

/// Environment variable naming a prebuilt `helm`.
const HELM_ENV: &str = "KUBESINK_HELM";
/// The release and namespace of the default install
/// (`helm install kubesink deploy/helm/kubesink -n kubesink`).
const RELEASE: &str = "kubesink";
const NAMESPACE: &str = "kubesink";

/// A digest for `image.digest` (any 64 hex digits).
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The value sets the chart is linted, rendered and applied with: a name
/// (also its release and namespace, `ks-<name>`, except `default`) and
/// `helm` flags.
const VALUE_SETS: &[(&str, &[&str])] = &[
    ("default", &[]),
    (
        "switches",
        &[
            "--set=kubedl.metaStorage=mysql",
            "--set=kubedl.eventStorage=aliyun-sls",
            "--set=kubedl.region=cn-hangzhou",
        ],
    ),
    (
        "single",
        &[
            "--set=replicaCount=1",
            "--set=leaderElection.enabled=false",
            "--set=resources.limits.memory=1Gi",
            "--set=image.repository=registry.example.com/kubesink",
            // DIGEST
            "--set=image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ],
    ),
    (
        "everything",
        &[
            "--set=namespace.create=true",
            "--set=namespace.labels.pod-security\\.kubernetes\\.io/enforce=restricted",
            "--set=metrics.serviceMonitor.enabled=true",
            "--set=metrics.serviceMonitor.labels.release=prometheus",
            "--set=networkPolicy.enabled=true",
            r#"--set-json=networkPolicy.ingressFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]"#,
            "--set=leaderElection.leaseName=ks-lease",
            "--set=extraArgs={--events=related}",
            // "\0asm" followed by version 1, base64: a module's first bytes.
            "--set=sinkModules.kubesink-sinks.mysql\\.wasm=AGFzbQEAAAA=",
            "--set=sinkModules.kubesink-sinks.sls\\.wasm=AGFzbQEAAAA=",
        ],
    ),
];

/// The chart's folder.
fn chart_dir() -> PathBuf {
    guests::workspace_root().join("deploy/helm/kubesink")
}

/// `helm`: [`HELM_ENV`] if set, else the cached build (built on first use).
async fn helm_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(HELM_ENV) {
        return Ok(PathBuf::from(path));
    }
    let script = guests::workspace_root().join("tests/controlplane/build-tool.sh");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .arg("helm")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        output.status.success(),
        "{} helm failed ({}):\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    let dir = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("build-tool.sh printed no directory")?;
    let helm = PathBuf::from(dir.trim()).join("helm");
    ensure!(
        helm.is_file(),
        "{} is missing after the build",
        helm.display()
    );
    Ok(helm)
}

/// Runs `helm args`; returns whether it succeeded, its stdout and stderr.
async fn helm(args: &[&str]) -> Result<(bool, String, String)> {
    let helm = helm_binary().await?;
    let output = tokio::process::Command::new(&helm)
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("kubesink-helm-cache"),
        )
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", helm.display()))?;
    Ok((
        output.status.success(),
        String::from_utf8(output.stdout)?,
        String::from_utf8(output.stderr)?,
    ))
}

/// The release and namespace a value set is installed as.
fn release_of(set: &str) -> String {
    if set == "default" {
        RELEASE.to_owned()
    } else {
        format!("ks-{set}")
    }
}

/// `helm template RELEASE chart -n NAMESPACE flags`, parsed.
async fn template(release: &str, namespace: &str, flags: &[&str]) -> Result<Vec<DynamicObject>> {
    let chart = chart_dir();
    let mut args = vec!["template", release, chart.to_str().context("chart path")?];
    args.extend(["--namespace", namespace]);
    args.extend(flags);
    let (ok, stdout, stderr) = helm(&args).await?;
    ensure!(ok, "helm {} failed:\n{stderr}", args.join(" "));
    Ok(kustomize::parse_objects(
        &stdout,
        &format!("helm template {release} ({})", flags.join(" ")),
    )?)
}

/// `helm template` with `flags` must fail; returns its stderr.
async fn template_error(flags: &[&str]) -> Result<String> {
    let chart = chart_dir();
    let mut args = vec!["template", RELEASE, chart.to_str().context("chart path")?];
    args.extend(["--namespace", NAMESPACE]);
    args.extend(flags);
    let (ok, _, stderr) = helm(&args).await?;
    ensure!(!ok, "helm {} succeeded; it should fail", args.join(" "));
    Ok(stderr)
}

/// `Kind namespace/name` of each object, sorted.
fn inventory(objects: &[DynamicObject]) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("?"),
                kustomize::object_name(o)
            )
        })
        .collect();
    names.sort();
    names
}

fn one<'a>(objects: &'a [DynamicObject], kind: &str, name: &str) -> Result<&'a DynamicObject> {
    match kustomize::find(objects, kind, Some(name)).as_slice() {
        [object] => Ok(object),
        other => bail!(
            "wanted one {kind} {name}, found {} in {:#?}",
            other.len(),
            inventory(objects)
        ),
    }
}

fn container_args(deployment: &Deployment) -> Result<Vec<String>> {
    Ok(deploy::main_container(deployment)?
        .args
        .clone()
        .unwrap_or_default())
}

/// The Role's rules about Leases, as `resourceNames verbs`.
fn lease_rules(objects: &[DynamicObject], role: &str) -> Result<Vec<String>> {
    let role = one(objects, "Role", role)?;
    Ok(role.data["rules"]
        .as_array()
        .context("Role rules")?
        .iter()
        .filter(|r| r["resources"] == json!(["leases"]))
        .map(|r| format!("{} {}", r["resourceNames"], r["verbs"]))
        .collect())
}

/// The names of the container's environment variables, with `?` after
/// those read from an optional Secret key.
fn env_names(deployment: &Deployment) -> Result<Vec<String>> {
    Ok(deploy::main_container(deployment)?
        .env
        .iter()
        .flatten()
        .map(|e| {
            let optional = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .and_then(|s| s.optional)
                .unwrap_or(false);
            format!("{}{}", e.name, if optional { "?" } else { "" })
        })
        .collect())
}

#[tokio::test]
async fn helm_chart_lints_and_renders_each_value_set() -> Result<()> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path")?;
    let binary = kubesink_binary()?;
    for (set, flags) in VALUE_SETS {
        let release = release_of(set);
        let mut args = vec!["lint", "--strict", chart, "--namespace", &release];
        args.extend(*flags);
        let (ok, stdout, stderr) = helm(&args).await?;
        ensure!(
            ok && stdout.contains("0 chart(s) failed"),
            "helm lint ({set}) failed:\n{stdout}\n{stderr}"
        );

        let objects = template(&release, &release, flags).await?;
        let full = if *set == "default" {
            RELEASE.to_owned()
        } else {
            format!("{release}-kubesink")
        };
        let deployment: Deployment =
            serde_json::from_value(serde_json::to_value(one(&objects, "Deployment", &full)?)?)?;
        let args = container_args(&deployment)?;
        // Every flag is one `kubesink run` has (else the pods crash-loop).
        ensure!(
            args.first().map(String::as_str) == Some("run"),
            "{set}: {args:?}"
        );
        for arg in &args[1..] {
            let flag = arg.split('=').next().unwrap_or(arg);
            ensure!(
                supports_flag(&binary, "run", flag)?,
                "{set}: the chart passes {flag}, which `kubesink run` lacks"
            );
        }
        let has = |a: &str| args.iter().any(|x| x == a);
        let spec = deployment.spec.as_ref().context("Deployment spec")?;
        let image = deploy::main_container(&deployment)?.image.clone();
        let inventory = inventory(&objects);
        match *set {
            "default" => {
                ensure!(
                    inventory
                        == [
                            "ClusterRole kubesink",
                            "ClusterRoleBinding kubesink",
                            "ConfigMap kubesink/kubesink-config",
                            "Deployment kubesink/kubesink",
                            "Role kubesink/kubesink",
                            "RoleBinding kubesink/kubesink",
                            "ServiceAccount kubesink/kubesink",
                        ],
                    "{set}: {inventory:#?}"
                );
                ensure!(
                    spec.replicas == Some(2),
                    "{set}: replicas {:?}",
                    spec.replicas
                );
                ensure!(
                    has("--config=/etc/kubesink/config.yaml")
                        && has("--leader-elect")
                        && has("--lease-name=kubesink"),
                    "{set}: {args:?}"
                );
                ensure!(
                    image.as_deref() == Some("ghcr.io/kubesink/kubesink:v0.1.0"),
                    "{set}: image {image:?}"
                );
            }
            "switches" => {
                ensure!(
                    args == [
                        "run",
                        "--meta-storage=mysql",
                        "--event-storage=aliyun-sls",
                        "--region=cn-hangzhou",
                        "--listen=0.0.0.0:8080",
                        "--leader-elect",
                        "--lease-name=ks-switches-kubesink",
                        "--shutdown-grace=30s",
                    ],
                    "{set}: {args:?}"
                );
                ensure!(
                    kustomize::find(&objects, "ConfigMap", None).is_empty(),
                    "{set}: the switches replace the configuration file: {inventory:#?}"
                );
                // aliyun-sls needs the SLS Secret: no longer optional.
                let env = env_names(&deployment)?;
                ensure!(
                    env.contains(&"SLS_ENDPOINT".to_owned())
                        && env.contains(&"MYSQL_PASSWORD".to_owned())
                        && !env.iter().any(|e| e.ends_with('?')),
                    "{set}: {env:?}"
                );
            }
            "single" => {
                ensure!(
                    spec.replicas == Some(1),
                    "{set}: replicas {:?}",
                    spec.replicas
                );
                ensure!(
                    !args
                        .iter()
                        .any(|a| a.starts_with("--lease") || a == "--leader-elect"),
                    "{set}: {args:?}"
                );
                let leases = lease_rules(&objects, &full)?;
                ensure!(leases.is_empty(), "{set}: Lease grants {leases:?}");
                ensure!(
                    image == Some(format!("registry.example.com/kubesink@{DIGEST}")),
                    "{set}: image {image:?}"
                );
                let limits = deploy::main_container(&deployment)?
                    .resources
                    .as_ref()
                    .and_then(|r| r.limits.as_ref())
                    .and_then(|l| l.get("memory"))
                    .map(|q| q.0.clone());
                ensure!(limits.as_deref() == Some("1Gi"), "{set}: {limits:?}");
            }
            "everything" => {
                for want in [
                    format!("Namespace {release}"),
                    format!("Service {release}/{full}"),
                    format!("ServiceMonitor {release}/{full}"),
                    format!("NetworkPolicy {release}/{full}"),
                    format!("ConfigMap {release}/kubesink-sinks"),
                ] {
                    ensure!(
                        inventory.contains(&want),
                        "{set}: no {want} in {inventory:#?}"
                    );
                }
                let namespace = one(&objects, "Namespace", &release)?;
                ensure!(
                    namespace
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("pod-security.kubernetes.io/enforce").cloned())
                        == Some("restricted".into()),
                    "{set}: {:?}",
                    namespace.metadata.labels
                );
                ensure!(
                    has("--lease-name=ks-lease") && has("--events=related"),
                    "{set}: {args:?}"
                );
                let leases = lease_rules(&objects, &full)?;
                ensure!(
                    leases.iter().any(|r| r.starts_with("[\"ks-lease\"]")),
                    "{set}: Lease grants {leases:?}"
                );
                let modules = one(&objects, "ConfigMap", "kubesink-sinks")?;
                ensure!(
                    modules.data["binaryData"]
                        == json!({"mysql.wasm": "AGFzbQEAAAA=", "sls.wasm": "AGFzbQEAAAA="}),
                    "{set}: {:?}",
                    modules.data
                );
            }
            other => bail!("no checks for value set {other}"),
        }
    }

    // Values that cannot work fail the render, naming the value at fault.
    for (flags, says) in [
        (
            &["--set=replicaCount=3", "--set=leaderElection.enabled=false"][..],
            "replicaCount is 3 but leaderElection.enabled is false",
        ),
        (
            &["--set=kubedl.eventStorage=kafka"][..],
            "kubedl.eventStorage \"kafka\"",
        ),
        (
            &[
                "--set=kubedl.eventStorage=aliyun-sls",
                "--set=secrets.sls.enabled=false",
            ][..],
            "secrets.sls.enabled must be true",
        ),
        (
            &["--set=serviceAccount.create=false"][..],
            "serviceAccount.name is required",
        ),
    ] {
        let stderr = template_error(flags).await?;
        ensure!(
            stderr.contains(says),
            "{flags:?}: wanted {says:?} in:\n{stderr}"
        );
    }
    Ok(())
}

/// The pieces of a pod spec compared between the chart and the kustomize
/// base: everything, with the generated ConfigMap's hash suffix removed
/// and the chart's explicit `imagePullPolicy` (the API server's default
/// for a tagged image) dropped.
fn comparable_pod_spec(deployment: &Deployment) -> Result<Value> {
    let mut spec = serde_json::to_value(
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .context("pod spec")?,
    )?;
    for container in spec["containers"].as_array_mut().context("containers")? {
        container
            .as_object_mut()
            .context("container")?
            .remove("imagePullPolicy");
    }
    for volume in spec["volumes"].as_array_mut().context("volumes")? {
        if let Some(name) = volume.pointer_mut("/configMap/name")
            && let Some(text) = name.as_str()
        {
            *name = json!(strip_hash(text));
        }
    }
    Ok(spec)
}

/// `kubesink-config-<hash>` (kustomize's generated name) as `kubesink-config`.
fn strip_hash(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((base, hash))
            if base.ends_with("-config")
                && hash.len() == 10
                && hash.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            base.to_owned()
        }
        _ => name.to_owned(),
    }
}

#[tokio::test]
async fn helm_default_render_matches_the_kustomize_base() -> Result<()> {
    let chart = template(RELEASE, NAMESPACE, &[]).await?;
    let base = kustomize::render(&guests::workspace_root().join("deploy")).await?;

    let key = |o: &DynamicObject| -> String {
        let kind = o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
        let name = match o.metadata.namespace.as_deref() {
            Some(ns) => format!(
                "{ns}/{}",
                strip_hash(&o.metadata.name.clone().unwrap_or_default())
            ),
            None => o.metadata.name.clone().unwrap_or_default(),
        };
        format!("{kind} {name}")
    };
    let chart_by: BTreeMap<String, &DynamicObject> = chart.iter().map(|o| (key(o), o)).collect();
    let base_by: BTreeMap<String, &DynamicObject> = base.iter().map(|o| (key(o), o)).collect();
    // The one difference by design: Helm creates the release namespace
    // (`--create-namespace`), the chart only with namespace.create=true.
    let mut base_keys: BTreeSet<&String> = base_by.keys().collect();
    ensure!(
        base_keys.remove(&"Namespace kubesink".to_owned()),
        "the kustomize base has no Namespace kubesink: {base_keys:?}"
    );
    let chart_keys: BTreeSet<&String> = chart_by.keys().collect();
    ensure!(
        chart_keys == base_keys,
        "objects differ:\nchart {chart_keys:#?}\nkustomize {base_keys:#?}"
    );
    let with_namespace = template(RELEASE, NAMESPACE, &["--set=namespace.create=true"]).await?;
    one(&with_namespace, "Namespace", NAMESPACE)?;

    for (key, base) in &base_by {
        let Some(chart) = chart_by.get(key) else {
            continue;
        };
        // kustomize's labels are all on the chart's objects.
        for (label, value) in base.metadata.labels.iter().flatten() {
            ensure!(
                chart.metadata.labels.as_ref().and_then(|l| l.get(label)) == Some(value),
                "{key}: label {label}={value} missing in the chart's {:?}",
                chart.metadata.labels
            );
        }
        let kind = key.split(' ').next().unwrap_or_default();
        match kind {
            "ClusterRole" | "Role" => ensure!(
                chart.data["rules"] == base.data["rules"],
                "{key}: rules differ:\nchart {}\nkustomize {}",
                chart.data["rules"],
                base.data["rules"]
            ),
            "ClusterRoleBinding" | "RoleBinding" => {
                for field in ["roleRef", "subjects"] {
                    ensure!(
                        chart.data[field] == base.data[field],
                        "{key}: {field} differs: chart {} kustomize {}",
                        chart.data[field],
                        base.data[field]
                    );
                }
            }
            "ConfigMap" => {
                let parse = |o: &DynamicObject| -> Result<Value> {
                    let text = o.data["data"]["config.yaml"]
                        .as_str()
                        .with_context(|| format!("{key}: no config.yaml"))?;
                    Ok(serde_yaml::from_str(text)?)
                };
                ensure!(
                    parse(chart)? == parse(base)?,
                    "{key}: config.yaml differs:\nchart {}\nkustomize {}",
                    parse(chart)?,
                    parse(base)?
                );
            }
            "Deployment" => {
                let chart: Deployment = serde_json::from_value(serde_json::to_value(chart)?)?;
                let base: Deployment = serde_json::from_value(serde_json::to_value(base)?)?;
                let (c, b) = (
                    chart.spec.as_ref().context("spec")?,
                    base.spec.as_ref().context("spec")?,
                );
                ensure!(c.replicas == b.replicas, "{key}: replicas differ");
                for (label, value) in b.selector.match_labels.iter().flatten() {
                    ensure!(
                        c.selector.match_labels.as_ref().and_then(|l| l.get(label)) == Some(value),
                        "{key}: selector {label}={value} missing"
                    );
                }
                let (chart_pod, base_pod) =
                    (comparable_pod_spec(&chart)?, comparable_pod_spec(&base)?);
                ensure!(
                    chart_pod == base_pod,
                    "{key}: pod specs differ:\nchart {}\nkustomize {}",
                    serde_json::to_string_pretty(&chart_pod)?,
                    serde_json::to_string_pretty(&base_pod)?
                );
            }
            "ServiceAccount" => {}
            other => bail!("{key}: no comparison for kind {other}"),
        }
    }
    Ok(())
}

/// A Pod with the Deployment's pod template, in `namespace`.
fn pod_of(deployment: &Deployment, namespace: &str) -> Result<DynamicObject> {
    let template = &deployment.spec.as_ref().context("spec")?.template;
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kubesink-pss-check", "namespace": namespace,
            "labels": template.metadata.as_ref().and_then(|m| m.labels.clone())},
        "spec": template.spec,
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mariadb_helm_chart_applies_and_runs_as_the_kustomize_base_does() -> Result<()> {
    // The default install, with the namespace `helm install
    // --create-namespace` would create.
    let mut objects: Vec<DynamicObject> = vec![serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE},
    }))?];
    objects.extend(template(RELEASE, NAMESPACE, &[]).await?);
    let deployed = deploy::deploy_objects("helm_ok", objects).await?;
    let admin = deployed.admin();

    // Every other value set is admitted by the API server too (each its
    // own release and namespace; the ServiceMonitor against the Prometheus
    // Operator's CRD).
    deployed
        .cluster
        .install_crd(
            &guests::workspace_root()
                .join("tests/fixtures/crds/monitoring.coreos.com_servicemonitors.yaml"),
        )
        .await?;
    for (set, flags) in &VALUE_SETS[1..] {
        let release = release_of(set);
        let mut objects = template(&release, &release, flags).await?;
        if kustomize::find(&objects, "Namespace", Some(&release)).is_empty() {
            objects.insert(
                0,
                serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": release},
                }))?,
            );
        }
        let stored = kustomize::apply(&admin, &objects)
            .await
            .with_context(|| format!("value set {set}"))?;
        ensure!(
            stored.len() == objects.len(),
            "{set}: not every object stored"
        );
        if *set == "everything" {
            // Pod Security Admission enforces `restricted` in this
            // namespace: the chart's pod is admitted, and the same pod
            // allowed to escalate privileges is not (so the check bites).
            let deployment: Deployment = serde_json::from_value(serde_json::to_value(one(
                &objects,
                "Deployment",
                &format!("{release}-kubesink"),
            )?)?)?;
            let pod = pod_of(&deployment, &release)?;
            kustomize::dry_run(&admin, std::slice::from_ref(&pod))
                .await
                .context("the chart's pod in a restricted namespace")?;
            let mut escalating = pod.clone();
            escalating.data["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] =
                json!(true);
            let refused = kustomize::dry_run(&admin, std::slice::from_ref(&escalating)).await;
            let message = format!("{refused:?}");
            ensure!(
                refused.is_err() && message.contains("restricted"),
                "a pod allowing privilege escalation was not refused by PSA: {message}"
            );
        }
    }

    // kubesink with the chart's ServiceAccount, as deploy.rs runs the
    // kustomize base.
    deploy::check_grants_and_delivery(deployed).await
}
