//! kubesink's tables read and written by KubeDL's own code: the Go program
//! `tests/kubedl-compat` (KubeDL v0.5.0's mysql backend, `dmo` models and
//! converters, fetched through the Go module proxy and cached by
//! `tests/scripts/kubedl-compat.sh`) against the test MariaDB.
//!
//! - A database KubeDL created and filled (with the duplicate rows its
//!   find-then-create race leaves) is migrated by kubesink without losing
//!   a uid: duplicates merged (newest version kept), unique keys added,
//!   `gmt_finished` generated from `gmt_job_finished`, all logged.
//! - KubeDL's read API (`ListJobs` with the console's filters and paging,
//!   `GetJob`, `ListPods`) and the console's stop/delete give the same
//!   results on rows kubesink wrote from the fixture as on rows KubeDL's
//!   converters wrote from the same objects, field by field, except the
//!   differences listed in [`EXPECTED_DIFFERENCES`], each with its reason.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, bail, ensure};
use kubesink_tests::binary::{built_once, kubesink_binary, run_build_script};
use kubesink_tests::guests;
use kubesink_tests::mariadb::{self, TestDb};
use serde_json::Value;
use sqlx::{AssertSqlSafe, MySqlPool, Row};

/// Builds (or finds in the cache) the KubeDL compatibility program.
pub fn compat_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    built_once(&BUILT, || {
        let line = run_build_script("tests/scripts/kubedl-compat.sh")?;
        let path = PathBuf::from(line.trim());
        ensure!(path.is_file(), "{} is not a file", path.display());
        Ok(path)
    })
}

fn watch_fixture() -> PathBuf {
    guests::workspace_root().join("tests/fixtures/kubedl/watch.json")
}

/// Runs `kubedl-compat args` on `db` (KubeDL's variables, TZ=UTC as the
/// backend's DSN says loc=Local); returns its stdout.
async fn kubedl(db: &TestDb, args: &[&str]) -> Result<String> {
    let bin = compat_binary()?;
    let env = db.kubedl_env();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || -> Result<String> {
        let out = Command::new(&bin)
            .args(&args)
            .env_clear()
            .env("TZ", "UTC")
            .envs(env)
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        ensure!(
            out.status.success(),
            "kubedl-compat {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    })
    .await?
}

/// `kubesink --meta-storage mysql --event-storage mysql replay FILE` on
/// `db` (KubeDL's variables, the bundled mysql sink); returns its log.
async fn kubesink_replay(db: &TestDb, file: &Path) -> Result<String> {
    let bin = kubesink_binary()?;
    let sink = guests::guest_wasm("kubesink-sink-mysql")?;
    let sink_dir = sink.parent().context("guest dir")?.to_owned();
    let cache = tempfile::tempdir()?;
    let mut env: Vec<(String, String)> = db
        .kubedl_env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.push(("KUBESINK_SINK_DIR".into(), sink_dir.display().to_string()));
    env.push((
        "KUBESINK_CACHE_DIR".into(),
        cache.path().display().to_string(),
    ));
    env.push(("HOME".into(), cache.path().display().to_string()));
    env.push(("NO_COLOR".into(), "1".into()));
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || -> Result<String> {
        let out = Command::new(&bin)
            .args([
                "--meta-storage",
                "mysql",
                "--event-storage",
                "mysql",
                "replay",
            ])
            .arg(&file)
            .arg("--no-show")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure!(
            out.status.success(),
            "kubesink replay failed ({}): {log}",
            out.status
        );
        Ok(log)
    })
    .await?
}

/// Every row of `table` as column → text (NULL as JSON null), by `id`.
async fn rows(pool: &MySqlPool, table: &str) -> Result<Vec<BTreeMap<String, Value>>> {
    let cols: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    let select: Vec<String> = cols
        .iter()
        .map(|c| format!("CAST(`{c}` AS CHAR)"))
        .collect();
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {} FROM `{table}` ORDER BY id",
        select.join(", ")
    )))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            cols.iter()
                .enumerate()
                .map(|(i, c)| {
                    let v: Option<String> = r.get(i);
                    (c.clone(), v.map_or(Value::Null, Value::String))
                })
                .collect()
        })
        .collect())
}

fn text<'a>(row: &'a BTreeMap<String, Value>, col: &str) -> &'a str {
    row.get(col).and_then(Value::as_str).unwrap_or("")
}

/// The newest row of each uid (greatest version, then greatest id), as
/// the merge must keep it.
fn newest_by_key(
    rows: &[BTreeMap<String, Value>],
    key: &str,
) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut out: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for r in rows {
        let version = |r: &BTreeMap<String, Value>| text(r, "version").parse::<u64>().unwrap_or(0);
        let id = |r: &BTreeMap<String, Value>| text(r, "id").parse::<u64>().unwrap_or(0);
        let k = text(r, key).to_owned();
        match out.get(&k) {
            Some(old) if (version(old), id(old)) >= (version(r), id(r)) => {}
            _ => {
                out.insert(k, r.clone());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_kubedl_database_with_duplicates_is_migrated_without_losing_a_row() -> Result<()> {
    let db = mariadb::fresh_database("kdl_migrate").await?;
    let pool = db.connect().await?;
    // KubeDL creates its tables and fills them, racing on the first two
    // versions of every job and pod.
    kubedl(
        &db,
        &["save-racing", &watch_fixture().display().to_string()],
    )
    .await?;
    let mut before = BTreeMap::new();
    for (table, key) in [("job_info", "job_id"), ("replica_info", "pod_id")] {
        let rows = rows(&pool, table).await?;
        let newest = newest_by_key(&rows, key);
        ensure!(
            rows.len() > newest.len(),
            "{table}: KubeDL's race left no duplicate rows ({} rows)",
            rows.len()
        );
        before.insert(table, (rows.len(), newest));
    }
    // kubesink starts on it (an empty input: only the sink's init runs).
    let dir = tempfile::tempdir()?;
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "")?;
    let log = kubesink_replay(&db, &empty).await?;
    for needle in [
        "table `job_info`: merged ",
        "table `job_info`: added a unique key on `job_id`",
        "table `replica_info`: merged ",
        "table `replica_info`: added a unique key on `pod_id`",
        "table `job_info`: added column `gmt_finished` generated from `gmt_job_finished`",
        "table `job_info`: added column `version_num`",
    ] {
        ensure!(log.contains(needle), "the log lacks `{needle}`:\n{log}");
    }
    for (table, key) in [("job_info", "job_id"), ("replica_info", "pod_id")] {
        let after = rows(&pool, table).await?;
        let (n_before, newest) = &before[table];
        let keys: BTreeSet<&str> = after.iter().map(|r| text(r, key)).collect();
        assert_eq!(
            keys,
            newest.keys().map(String::as_str).collect(),
            "{table}: the same uids"
        );
        assert_eq!(after.len(), keys.len(), "{table}: one row per uid");
        eprintln!("{table}: {n_before} rows, {} after the merge", after.len());
        for row in &after {
            let want = &newest[text(row, key)];
            // Every column KubeDL wrote is the newest version's.
            for (col, value) in want {
                assert_eq!(
                    row.get(col),
                    Some(value),
                    "{table}.{col} of {}",
                    text(row, key)
                );
            }
            assert_eq!(text(row, "version_num"), text(row, "version"));
            if table == "job_info" {
                assert_eq!(row.get("gmt_finished"), row.get("gmt_job_finished"));
            }
        }
    }
    // kubesink then writes the fixture into the migrated tables, and
    // KubeDL's reader still finds one job per uid.
    kubesink_replay(&db, &watch_fixture()).await?;
    let read: Value = serde_json::from_str(&kubedl(&db, &["read"]).await?)?;
    let all = &read["lists"]["all"];
    assert_eq!(all["count"], 2, "{all}");
    pool.close().await;
    db.drop_database().await?;
    Ok(())
}

/// A difference between what KubeDL's reader returns on KubeDL's rows and
/// on kubesink's that is expected: paths ending in `field` under an object
/// whose path contains `under` ("" for any).
struct Expected {
    under: &'static str,
    field: &'static str,
    reason: &'static str,
}

/// The TFJob's pods removed from the cluster: `mnist-ps-0` (deleted while
/// running by `cleanPodPolicy: Running`) and the OOM-killed first
/// `mnist-worker-1`.
const PS0: &str = "04f77506-787c-476b-a8b2-a65999a66e96";
const WORKER1_OOM: &str = "2c2e9b5a-7d22-49ed-a123-de161d81facc";

const EXPECTED_DIFFERENCES: &[Expected] = &[
    Expected {
        under: "",
        field: "id",
        reason: "auto-increment ids depend on insert order (kubesink inserts events and a batch/v1 job too)",
    },
    Expected {
        under: "",
        field: "gmt_modified",
        reason: "KubeDL writes the wall-clock time of its write (gorm); kubesink the object's last status transition",
    },
    Expected {
        under: PS0,
        field: "is_in_etcd",
        reason: "kubesink marks a deleted pod is_in_etcd = 0; KubeDL v0.5.0's pod controller calls StopPod(name, namespace, uid) with name and namespace swapped, finds no row and never does",
    },
    Expected {
        under: WORKER1_OOM,
        field: "is_in_etcd",
        reason: "as for mnist-ps-0: KubeDL's swapped StopPod never marks the deleted pod",
    },
    Expected {
        under: PS0,
        field: "status",
        reason: "kubesink stops a pod deleted while Running (Stopped); KubeDL's swapped StopPod leaves it Running",
    },
    Expected {
        under: PS0,
        field: "gmt_finished",
        reason: "kubesink finishes a stopped pod at its deletion time; KubeDL's swapped StopPod leaves it NULL (and the console's StopPod, run on both, stamps the wall clock)",
    },
    Expected {
        under: PS0,
        field: "version",
        reason: "kubesink keeps the resourceVersion of the deletion; KubeDL's swapped StopPod never writes",
    },
    Expected {
        under: WORKER1_OOM,
        field: "version",
        reason: "kubesink keeps the resourceVersion of the deletion; KubeDL's swapped StopPod never writes",
    },
];

/// Arrays of objects become objects keyed `index:uid` so that paths name
/// the job or pod.
fn keyed(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Object(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let uid = item
                        .get("pod_id")
                        .or_else(|| item.get("job_id"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    (format!("{i}:{uid}"), keyed(item))
                })
                .collect(),
        ),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), keyed(v))).collect()),
        other => other.clone(),
    }
}

/// Leaf differences `(path, kubedl, kubesink)`.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<(String, Value, Value)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff(
                    &format!("{path}.{k}"),
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push((path.to_owned(), a.clone(), b.clone())),
        _ => {}
    }
}

/// Compares KubeDL's reader output on the two databases; returns the
/// expected differences seen.
fn compare(what: &str, kubedl: &Value, kubesink: &Value) -> Result<BTreeSet<usize>> {
    let mut diffs = Vec::new();
    diff(what, &keyed(kubedl), &keyed(kubesink), &mut diffs);
    let mut seen = BTreeSet::new();
    let mut unexpected = Vec::new();
    for (path, a, b) in diffs {
        let hit = EXPECTED_DIFFERENCES
            .iter()
            .position(|e| path.ends_with(&format!(".{}", e.field)) && path.contains(e.under));
        match hit {
            Some(i) => {
                seen.insert(i);
            }
            None => unexpected.push(format!("{path}: KubeDL's rows {a}, kubesink's {b}")),
        }
    }
    if !unexpected.is_empty() {
        bail!(
            "{} unexpected differences:\n{}",
            unexpected.len(),
            unexpected.join("\n")
        );
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_kubedl_reader_and_console_see_kubesink_rows_as_kubedls() -> Result<()> {
    let theirs = mariadb::fresh_database("kdl_theirs").await?;
    let ours = mariadb::fresh_database("kdl_ours").await?;
    let fixture = watch_fixture().display().to_string();
    kubedl(&theirs, &["save", &fixture]).await?;
    kubesink_replay(&ours, &watch_fixture()).await?;

    // What kubesink persists and KubeDL does not: the batch/v1 Job
    // default/pi and its pod (KubeDL persists its own job kinds only), and
    // events (KubeDL sends them to SLS). Checked, then set aside so that
    // the rest compares one to one.
    let pool = ours.connect().await?;
    let extra: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(kind AS CHAR), CAST(name AS CHAR) FROM job_info WHERE kind <> 'TFJob'",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(extra, vec![("Job".to_owned(), "pi".to_owned())]);
    let extra_pods: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM replica_info WHERE job_id IN (SELECT job_id FROM job_info WHERE kind = 'Job')",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(extra_pods, 1, "pi's pod");
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_info")
        .fetch_one(&pool)
        .await?;
    assert_eq!(events, 62);
    sqlx::query(
        "DELETE FROM replica_info WHERE job_id IN (SELECT job_id FROM job_info WHERE kind = 'Job')",
    )
    .execute(&pool)
    .await?;
    sqlx::query("DELETE FROM job_info WHERE kind = 'Job'")
        .execute(&pool)
        .await?;

    let mut seen = BTreeSet::new();
    let a: Value = serde_json::from_str(&kubedl(&theirs, &["read"]).await?)?;
    let b: Value = serde_json::from_str(&kubedl(&ours, &["read"]).await?)?;
    assert_eq!(a["errors"], Value::Null, "KubeDL's rows: {}", a["errors"]);
    assert_eq!(b["errors"], Value::Null, "kubesink's rows: {}", b["errors"]);
    // The reads return something to compare.
    assert_eq!(b["lists"]["all"]["count"], 1);
    assert_eq!(b["lists"]["status_succeeded"]["count"], 1);
    assert_eq!(b["lists"]["page_2_of_size_1"]["count"], 1);
    let job = b["lists"]["all"]["jobs"][0].clone();
    assert_eq!(job["gmt_job_finished"], "2026-03-02T08:57:02Z", "{job}");
    assert_eq!(job["deploy_region"], "cn-hangzhou");
    seen.extend(compare("read", &a, &b)?);

    // The console's stop and delete.
    let a: Value = serde_json::from_str(&kubedl(&theirs, &["console"]).await?)?;
    let b: Value = serde_json::from_str(&kubedl(&ours, &["console"]).await?)?;
    assert_eq!(b["errors"], serde_json::json!({}), "{}", b["errors"]);
    assert_eq!(b["after"]["lists"]["deleted"]["count"], 1);
    seen.extend(compare("console", &a, &b)?);

    // Every listed difference occurs (the list is not stale).
    for (i, e) in EXPECTED_DIFFERENCES.iter().enumerate() {
        ensure!(
            seen.contains(&i),
            "expected difference `{}` under `{}` did not occur ({})",
            e.field,
            e.under,
            e.reason
        );
    }
    pool.close().await;
    theirs.drop_database().await?;
    ours.drop_database().await?;
    Ok(())
}

// ---------------------------------------------------------------------
// KubeDL's documented Deployments, with only the image replaced.

mod seed_deployment {
    use std::time::Duration;

    use anyhow::{Context, Result, bail, ensure};
    use k8s_openapi::api::core::v1::{Container, Event, Namespace, ServiceAccount};
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    use kube::api::{Api, ApiResource, DynamicObject, PostParams};
    use kube::core::GroupVersionKind;
    use kube::{Client, ResourceExt};
    use kubesink_tests::binary::{Kubesink, kubesink_binary};
    use kubesink_tests::cluster::{self, Cluster};
    use kubesink_tests::mariadb;
    use kubesink_tests::{guests, kustomize, sls};
    use serde_json::json;
    use tokio::net::{TcpListener, TcpStream};

    const NAMESPACE: &str = "kubedl-system";
    /// The seed Deployment names no ServiceAccount: the pod runs as
    /// `default`.
    const SERVICE_ACCOUNT: &str = "default";
    /// The image the test "pushes": only a name, replacing KubeDL's.
    const IMAGE: &str = "kubesink:test";
    const WAIT: Duration = Duration::from_secs(120);

    fn fixture(name: &str) -> Result<Vec<DynamicObject>> {
        let path = guests::workspace_root()
            .join("tests/fixtures/kubedl")
            .join(name);
        let yaml = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(kustomize::parse_objects(
            &yaml,
            &path.display().to_string(),
        )?)
    }

    /// The image's `ENTRYPOINT` and `CMD` (exec form) from deploy/Dockerfile.
    fn image_entrypoint_and_cmd() -> Result<(Vec<String>, Vec<String>)> {
        let path = guests::workspace_root().join("deploy/Dockerfile");
        let text = std::fs::read_to_string(&path)?;
        let instruction = |name: &str| -> Result<Vec<String>> {
            let line = text
                .lines()
                .rev()
                .find(|l| l.starts_with(&format!("{name} ")))
                .with_context(|| format!("{}: no {name}", path.display()))?;
            serde_json::from_str(line[name.len()..].trim())
                .with_context(|| format!("{}: {name} is not in exec form", path.display()))
        };
        Ok((instruction("ENTRYPOINT")?, instruction("CMD")?))
    }

    /// The command line the kubelet runs: the container's `command`, else
    /// the image's ENTRYPOINT; then the container's `args`, else (only when
    /// `command` is not set either) the image's CMD.
    fn kubelet_command_line(container: &Container) -> Result<Vec<String>> {
        let (entrypoint, cmd) = image_entrypoint_and_cmd()?;
        let mut line = match &container.command {
            Some(c) if !c.is_empty() => c.clone(),
            _ => entrypoint,
        };
        match (&container.command, &container.args) {
            (_, Some(args)) if !args.is_empty() => line.extend(args.iter().cloned()),
            (Some(c), _) if !c.is_empty() => {}
            _ => line.extend(cmd),
        }
        Ok(line)
    }

    /// The Deployment's first container as the API server stored it, with
    /// its image replaced by [`IMAGE`]; the objects applied.
    async fn apply_seed(
        admin: &Client,
        mut objects: Vec<DynamicObject>,
        secret_values: &[(&str, String)],
    ) -> Result<Container> {
        Api::<Namespace>::all(admin.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
            )
            .await?;
        Api::<ServiceAccount>::namespaced(admin.clone(), NAMESPACE)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": SERVICE_ACCOUNT}}))?,
            )
            .await?;
        for o in &mut objects {
            match o.types.as_ref().map(|t| t.kind.as_str()) {
                Some("Deployment") => {
                    let containers = o.data["spec"]["template"]["spec"]["containers"]
                        .as_array_mut()
                        .context("Deployment without containers")?;
                    ensure!(containers.len() == 1, "one container");
                    containers[0]["image"] = json!(IMAGE);
                }
                Some("Secret") => {
                    let data = o.data["stringData"]
                        .as_object_mut()
                        .context("Secret without stringData")?;
                    for (k, v) in secret_values {
                        ensure!(data.contains_key(*k), "the Secret has no key {k}");
                        data.insert((*k).to_owned(), json!(v));
                    }
                }
                other => bail!("unexpected object {other:?} in the seed manifests"),
            }
        }
        let applied = kustomize::apply(admin, &objects).await?;
        let deployment = applied
            .iter()
            .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "Deployment"))
            .context("no Deployment applied")?;
        let containers: Vec<Container> = serde_json::from_value(
            deployment.data["spec"]["template"]["spec"]["containers"].clone(),
        )?;
        let container = containers.into_iter().next().context("no container")?;
        assert_eq!(
            container.image.as_deref(),
            Some(IMAGE),
            "only the image changed"
        );
        Ok(container)
    }

    /// kubesink's ClusterRole from deploy/rbac.yaml, bound to the seed's
    /// ServiceAccount (a KubeDL installation binds its own role to it).
    async fn grant_kubesink_role(admin: &Client) -> Result<()> {
        let path = guests::workspace_root().join("deploy/rbac.yaml");
        let objects = kustomize::parse_objects(
            &std::fs::read_to_string(&path)?,
            &path.display().to_string(),
        )?;
        let role = kustomize::find(&objects, "ClusterRole", Some("kubesink"));
        ensure!(role.len() == 1, "deploy/rbac.yaml: ClusterRole kubesink");
        kustomize::apply(admin, &[role[0].clone()]).await?;
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "kubedl-kubesink"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubesink"},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
        }))?;
        Api::<ClusterRoleBinding>::all(admin.clone())
            .create(&PostParams::default(), &binding)
            .await?;
        Ok(())
    }

    /// A kubeconfig file with a TokenRequest token of the ServiceAccount
    /// (what the pod's projected token would be).
    async fn token_kubeconfig(cluster: &Cluster, dir: &std::path::Path) -> Result<String> {
        let token =
            crate::deploy::service_account_token(&cluster.client(), NAMESPACE, SERVICE_ACCOUNT)
                .await?;
        let path = dir.join("kubeconfig");
        crate::deploy::write_token_kubeconfig(cluster, &path, NAMESPACE, SERVICE_ACCOUNT, &token)
            .await?;
        Ok(path.display().to_string())
    }

    /// The container's environment with its Secret references resolved
    /// from the API server, as the kubelet would.
    async fn container_env(admin: &Client, container: &Container) -> Result<Vec<(String, String)>> {
        crate::deploy::container_env(admin, NAMESPACE, "kubedl", container).await
    }

    /// Runs `container` (of the seed Deployment, applied) as the kubelet
    /// would: its command line must be `expected` (KubeDL's args replace
    /// the image's CMD); kubesink's Role is granted to the Deployment's
    /// ServiceAccount, whose token the process runs with. Returns the
    /// process and its directory (to keep while it runs).
    async fn run_as_kubelet(
        cluster: &Cluster,
        container: &Container,
        expected: &[&str],
    ) -> Result<(Kubesink, tempfile::TempDir)> {
        let admin = cluster.client();
        let line = kubelet_command_line(container)?;
        assert_eq!(line, expected, "the args replace the image's CMD");
        grant_kubesink_role(&admin).await?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = token_kubeconfig(cluster, dir.path()).await?;
        let resolved = container_env(&admin, container).await?;
        let kubesink = start(&line, resolved, kubeconfig, dir.path())?;
        Ok((kubesink, dir))
    }

    /// Runs the composed command line (the image's ENTRYPOINT mapped to the
    /// built binary) with the container's environment, the image's ENV
    /// (its cache dir mapped to a temporary one) and, as the pod's mounted
    /// token would, `KUBECONFIG` naming the ServiceAccount's token; the
    /// operations server on a free loopback port (`KUBESINK_LISTEN`), as
    /// the pod's own IP would be.
    fn start(
        line: &[String],
        mut env: Vec<(String, String)>,
        kubeconfig: String,
        dir: &std::path::Path,
    ) -> Result<Kubesink> {
        let (entrypoint, _) = image_entrypoint_and_cmd()?;
        ensure!(
            line.first() == entrypoint.first(),
            "the command line {line:?} does not start with the image's ENTRYPOINT"
        );
        let sink = guests::guest_wasm("kubesink-sink-mysql")?;
        guests::guest_wasm("kubesink-sink-sls")?;
        env.push(("KUBECONFIG".into(), kubeconfig));
        env.push((
            "KUBESINK_SINK_DIR".into(),
            sink.parent().context("guest dir")?.display().to_string(),
        ));
        env.push((
            "KUBESINK_CACHE_DIR".into(),
            dir.join("cache").display().to_string(),
        ));
        env.push(("KUBESINK_LISTEN".into(), "127.0.0.1:0".into()));
        env.push(("HOME".into(), dir.display().to_string()));
        Kubesink::start(
            &kubesink_binary()?,
            &line[1..],
            &env,
            &dir.join("kubesink.log"),
        )
    }

    /// Forwards connections to `listener` to `target` (the seed Deployment
    /// names no MYSQL_PORT: kubesink, like KubeDL, connects to 3306).
    fn forward(listener: TcpListener, target: std::net::SocketAddr) {
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
    }

    /// A loopback address other than 127.0.0.1 on which port 3306 is free.
    async fn listen_on_3306() -> Result<(TcpListener, String)> {
        for last in 2..=250u8 {
            let host = format!("127.0.{}.{last}", std::process::id() % 250 + 1);
            if let Ok(l) = TcpListener::bind((host.as_str(), 3306)).await {
                return Ok((l, host));
            }
        }
        bail!("no loopback address with port 3306 free")
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_mariadb_kubedl_mysql_deployment_runs_kubesink_with_only_the_image_changed()
    -> Result<()> {
        let cluster = cluster::start().await?;
        let admin = cluster.client();
        cluster
            .install_crd(
                &guests::workspace_root()
                    .join("tests/fixtures/crds/training.kubedl.io_tfjobs.yaml"),
            )
            .await?;
        let db = mariadb::fresh_database("kdl_seed").await?;
        let env: std::collections::BTreeMap<&str, String> = db.kubedl_env().into_iter().collect();
        let (listener, host) = listen_on_3306().await?;
        forward(
            listener,
            format!("{}:{}", env["MYSQL_HOST"], env["MYSQL_PORT"]).parse()?,
        );
        let container = apply_seed(
            &admin,
            fixture("seed-deployment-mysql.yaml")?,
            &[
                ("host", host),
                ("dbName", env["MYSQL_DB_NAME"].clone()),
                ("user", env["MYSQL_USER"].clone()),
                ("password", env["MYSQL_PASSWORD"].clone()),
                ("port", "3306".into()),
            ],
        )
        .await?;
        let (mut kubesink, _dir) = run_as_kubelet(
            &cluster,
            &container,
            &["/usr/local/bin/kubesink", "--meta-storage", "mysql"],
        )
        .await?;

        let job: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob",
            "metadata": {"name": "seed"},
            "spec": {"tfReplicaSpecs": {"Worker": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "tensorflow", "image": "tf:2"}]}}}}},
        }))?;
        let uid = tfjob_api(admin.clone())
            .create(&PostParams::default(), &job)
            .await?
            .uid()
            .context("uid")?;
        let pool = db.connect().await?;
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let found: Option<String> =
                sqlx::query_scalar("SELECT CAST(name AS CHAR) FROM job_info WHERE job_id = ?")
                    .bind(&uid)
                    .fetch_optional(&pool)
                    .await
                    .ok()
                    .flatten();
            if found.as_deref() == Some("seed") {
                break;
            }
            if let Some(status) = kubesink.exited()? {
                bail!("kubesink exited ({status}):\n{}", kubesink.tail(40));
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "no job_info row for TFJob seed within {WAIT:?}; log:\n{}",
                kubesink.tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        kubesink.terminate(Duration::from_secs(30)).await?;
        pool.close().await;
        db.drop_database().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_kubedl_sls_deployment_runs_kubesink_with_only_the_image_changed() -> Result<()>
    {
        let cluster = cluster::start().await?;
        let admin = cluster.client();
        let emulator = sls::start(
            sls::EmulatorConfig::default()
                .key("seed-ak", "seed-sk")
                .logstore("kubedl-project", "kubedl"),
        )
        .await?;
        let container = apply_seed(
            &admin,
            fixture("seed-deployment-sls.yaml")?,
            &[
                ("endpoint", emulator.endpoint()),
                ("accessKey", "seed-ak".into()),
                ("accessSecret", "seed-sk".into()),
                ("project", "kubedl-project".into()),
                ("logStore", "kubedl".into()),
            ],
        )
        .await?;
        let (mut kubesink, _dir) = run_as_kubelet(
            &cluster,
            &container,
            &["/usr/local/bin/kubesink", "--event-storage", "aliyun-sls"],
        )
        .await?;

        let event: Event = serde_json::from_value(json!({
            "metadata": {"name": "seed-event", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default", "uid": "u-1"},
            "reason": "SeedCheck", "message": "kubesink from KubeDL's manifest", "type": "Normal",
            "firstTimestamp": "2026-03-02T08:00:00Z", "lastTimestamp": "2026-03-02T08:00:00Z", "count": 1,
            "source": {"component": "test"},
        }))?;
        Api::<Event>::namespaced(admin.clone(), "default")
            .create(&PostParams::default(), &event)
            .await?;
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let logs = emulator.logs("kubedl-project", "kubedl");
            if logs.iter().any(|l| l.get("Reason") == Some("SeedCheck")) {
                break;
            }
            if let Some(status) = kubesink.exited()? {
                bail!("kubesink exited ({status}):\n{}", kubesink.tail(40));
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "no SLS log for event seed-event within {WAIT:?}; log:\n{}",
                kubesink.tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        kubesink.terminate(Duration::from_secs(30)).await?;
        Ok(())
    }
}
