//! The test control plane itself (`kubesink_tests::cluster`): each test
//! starts a real etcd and kube-apiserver (building them on first use) and
//! checks what later tests rely on: admin access, RBAC enforcement, an API
//! server restart that keeps the data, and a CRD (KubeDL's TFJob) that
//! becomes Established and serves objects with a status subresource.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind, ObjectMeta};
use kube::{Api, Client};
use kubesink_tests::cluster;

/// Creates a namespace with the given name.
async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<Namespace> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {name}"))
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

/// The HTTP status of a kube API error, if the call failed with one.
fn api_status<T>(result: &kube::Result<T>) -> Option<u16> {
    match result {
        Err(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

#[tokio::test]
async fn cluster_starts_pinned_release_and_writes_kubeconfig() -> anyhow::Result<()> {
    let cluster = cluster::start().await?;
    let version = cluster.client().apiserver_version().await?;
    // The workspace's k8s-openapi feature is v1_33.
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33"),
        "{version:?}"
    );
    assert!(version.git_version.starts_with("v1.33."), "{version:?}");

    let kubeconfig = std::fs::read_to_string(cluster.kubeconfig_path())?;
    assert!(kubeconfig.contains(&cluster.base_url()), "{kubeconfig}");
    // The file alone is enough to connect, the way kubesink will read it.
    let from_file = kube::config::Kubeconfig::read_from(cluster.kubeconfig_path())?;
    let config = kube::Config::from_custom_kubeconfig(from_file, &Default::default()).await?;
    let client = Client::try_from(config)?;
    let namespaces = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await?;
    let names: Vec<_> = namespaces
        .items
        .iter()
        .filter_map(|ns| ns.metadata.name.as_deref())
        .collect();
    assert!(names.contains(&"default"), "{names:?}");
    assert!(names.contains(&"kube-system"), "{names:?}");
    assert!(cluster.apiserver_log_path().exists());
    assert!(cluster.etcd_log_path().exists());
    Ok(())
}

#[tokio::test]
async fn cluster_admin_creates_and_lists_namespace_and_configmaps() -> anyhow::Result<()> {
    let cluster = cluster::start().await?;
    let client = cluster.client();
    create_namespace(&client, "team-a").await?;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), "team-a");
    for i in 0..3 {
        let name = format!("settings-{i}");
        config_maps
            .create(
                &PostParams::default(),
                &config_map(&name, &[("index", &i.to_string())]),
            )
            .await
            .with_context(|| format!("creating configmap {name}"))?;
    }
    let listed = config_maps.list(&ListParams::default()).await?;
    let mut found: Vec<(String, String)> = listed
        .items
        .iter()
        .map(|cm| {
            (
                cm.metadata.name.clone().unwrap_or_default(),
                cm.data
                    .as_ref()
                    .and_then(|d| d.get("index"))
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .filter(|(name, _)| name.starts_with("settings-"))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("settings-0".to_owned(), "0".to_owned()),
            ("settings-1".to_owned(), "1".to_owned()),
            ("settings-2".to_owned(), "2".to_owned()),
        ]
    );
    // Other namespaces do not see them.
    let default_maps = Api::<ConfigMap>::namespaced(client, "default")
        .list(&ListParams::default())
        .await?;
    assert!(default_maps.items.iter().all(|cm| {
        !cm.metadata
            .name
            .as_deref()
            .unwrap_or("")
            .starts_with("settings-")
    }));
    Ok(())
}

#[tokio::test]
async fn cluster_rbac_denies_until_a_role_is_bound() -> anyhow::Result<()> {
    let cluster = cluster::start().await?;
    let admin = cluster.client();
    let ns = "rbac";
    create_namespace(&admin, ns).await?;

    // A ServiceAccount token from the TokenRequest API.
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), ns);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts.create(&PostParams::default(), &account).await?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request("reader", &PostParams::default(), &request)
        .await?
        .status
        .context("TokenRequest answered without a status")?
        .token;
    let sa_client = cluster.client_with_token("reader", &token).await?;
    // A client certificate for a user with no roles.
    let cert_client = cluster.client_for_user("carol", Some("developers")).await?;

    let sa_pods = Api::<Pod>::namespaced(sa_client.clone(), ns);
    let cert_pods = Api::<Pod>::namespaced(cert_client.clone(), ns);
    let denied = sa_pods.list(&ListParams::default()).await;
    assert_eq!(api_status(&denied), Some(403), "{denied:?}");
    let denied = cert_pods.list(&ListParams::default()).await;
    assert_eq!(api_status(&denied), Some(403), "{denied:?}");

    let role = Role {
        metadata: ObjectMeta {
            name: Some("pod-reader".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("pod-readers".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "pod-reader".into(),
        },
        subjects: Some(vec![
            Subject {
                kind: "ServiceAccount".into(),
                name: "reader".into(),
                namespace: Some(ns.into()),
                ..Subject::default()
            },
            Subject {
                kind: "Group".into(),
                name: "developers".into(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                ..Subject::default()
            },
        ]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await?;

    // RBAC's authorizer reads bindings from an informer: allow a moment.
    let mut allowed = false;
    for _ in 0..50 {
        if sa_pods.list(&ListParams::default()).await.is_ok()
            && cert_pods.list(&ListParams::default()).await.is_ok()
        {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        allowed,
        "the RoleBinding did not grant pod listing within 10s"
    );
    // The binding is namespaced and read-only: other namespaces and writes
    // stay forbidden.
    let elsewhere = Api::<Pod>::namespaced(sa_client, "default")
        .list(&ListParams::default())
        .await;
    assert_eq!(api_status(&elsewhere), Some(403), "{elsewhere:?}");
    let write = Api::<ConfigMap>::namespaced(cert_client, ns)
        .create(&PostParams::default(), &config_map("nope", &[]))
        .await;
    assert_eq!(api_status(&write), Some(403), "{write:?}");
    Ok(())
}

#[tokio::test]
async fn cluster_apiserver_restart_keeps_data() -> anyhow::Result<()> {
    let mut cluster = cluster::start().await?;
    let client = cluster.client();
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let created = config_maps
        .create(
            &PostParams::default(),
            &config_map("survivor", &[("state", "kept")]),
        )
        .await?;

    cluster.stop_apiserver();
    assert!(!cluster.apiserver_running());
    let during = config_maps.get("survivor").await;
    assert!(
        during.is_err(),
        "the API server answered while stopped: {during:?}"
    );

    cluster.start_apiserver().await?;
    assert!(cluster.apiserver_running());
    // The client made before the restart reconnects.
    let after = config_maps.get("survivor").await?;
    assert_eq!(after.metadata.uid, created.metadata.uid);
    assert_eq!(
        after.data,
        Some(BTreeMap::from([("state".to_owned(), "kept".to_owned())]))
    );
    // Writes work after the restart, and a second restart is fine too.
    config_maps
        .create(&PostParams::default(), &config_map("after-restart", &[]))
        .await?;
    cluster.stop_apiserver();
    cluster.start_apiserver().await?;
    let names: Vec<String> = config_maps
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|cm| cm.metadata.name)
        .collect();
    assert!(names.contains(&"survivor".to_owned()), "{names:?}");
    assert!(names.contains(&"after-restart".to_owned()), "{names:?}");
    assert!(matches!(
        cluster.start_apiserver().await,
        Err(cluster::ClusterError::AlreadyRunning)
    ));
    Ok(())
}

#[tokio::test]
async fn cluster_tfjob_crd_becomes_established_and_serves_status() -> anyhow::Result<()> {
    let cluster = cluster::start().await?;
    let client = cluster.client();
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/crds/training.kubedl.io_tfjobs.yaml");
    let established = cluster.install_crd(&path).await?;
    assert_eq!(established.spec.names.kind, "TFJob");
    assert_eq!(established.spec.names.plural, "tfjobs");
    assert_eq!(established.spec.group, "training.kubedl.io");
    // Installing it again is refused (AlreadyExists), naming the file.
    let again = cluster.install_crd(&path).await;
    assert!(
        matches!(&again, Err(cluster::ClusterError::Crd { message, .. }) if message.contains("already exists")),
        "{again:?}"
    );

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("training.kubedl.io", "v1alpha1", "TFJob"),
        "tfjobs",
    );
    let jobs = Api::<DynamicObject>::namespaced_with(client, "default", &resource);
    let job: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "training.kubedl.io/v1alpha1",
        "kind": "TFJob",
        "metadata": {"name": "mnist"},
        "spec": {"tfReplicaSpecs": {"Worker": {"replicas": 2}}},
        // Ignored on create: status is a subresource.
        "status": {"conditions": [{"type": "Running", "status": "True"}]},
    }))?;
    // install_crd returns once the resource is served: no retry needed.
    let created = jobs
        .create(&PostParams::default(), &job)
        .await
        .context("creating TFJob mnist")?;
    assert_eq!(
        created.data["spec"]["tfReplicaSpecs"]["Worker"]["replicas"],
        serde_json::json!(2)
    );
    assert!(
        created
            .data
            .get("status")
            .is_none_or(|s| s.get("conditions").is_none()),
        "status was accepted on create: {:?}",
        created.data
    );

    let status = serde_json::json!({
        "status": {"conditions": [{"type": "Created", "status": "True"},
                                  {"type": "Running", "status": "True"}]}
    });
    jobs.patch_status("mnist", &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    let fetched = jobs.get("mnist").await?;
    assert_eq!(
        fetched.data["status"]["conditions"][1]["type"],
        serde_json::json!("Running")
    );
    assert_eq!(
        fetched.data["spec"]["tfReplicaSpecs"]["Worker"]["replicas"],
        serde_json::json!(2)
    );
    Ok(())
}
