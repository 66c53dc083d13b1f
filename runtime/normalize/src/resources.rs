//! Requested resources, as KubeDL computes them: per pod, the sum over its
//! containers against the maximum over its init containers (element-wise,
//! the larger wins); per job, a JSON map replica type →
//! `{"resources": ResourceRequirements, "replicas": n}`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use crate::error::{Doc, NormalizeError};
use crate::quantity::Quantity;

/// Resource name → quantity.
type Amounts = BTreeMap<String, Quantity>;

/// One replica type's entry in a job's `resources` JSON.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaResources {
    /// Resources of one pod of this type.
    pub resources: ResourceRequirements,
    /// How many pods of this type.
    pub replicas: i32,
}

/// Resources of a pod: for requests and for limits, each resource is
/// max(max over init containers, sum over containers). Quantities are
/// printed in canonical form; resources that no container names are absent.
/// `prefix` is the path of `spec` inside `obj`, for errors.
pub fn pod_resources(
    obj: Doc<'_>,
    prefix: &str,
    spec: &PodSpec,
) -> Result<ResourceRequirements, NormalizeError> {
    let mut requests = [Amounts::new(), Amounts::new()];
    let mut limits = [Amounts::new(), Amounts::new()];
    let lists: [(&str, &[Container]); 2] = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", &spec.containers),
    ];
    for (which, (list_name, containers)) in lists.into_iter().enumerate() {
        let is_init = which == 0;
        for (i, c) in containers.iter().enumerate() {
            let Some(res) = &c.resources else { continue };
            let at = |part: &str| format!("{prefix}.{list_name}[{i}].resources.{part}");
            for (part, source, target) in [
                ("requests", &res.requests, &mut requests[which]),
                ("limits", &res.limits, &mut limits[which]),
            ] {
                for (name, q) in source.iter().flatten() {
                    let parsed = Quantity::parse(&q.0).map_err(|e| NormalizeError::Invalid {
                        object: obj.describe(),
                        field: format!("{}.{name}", at(part)),
                        reason: e.to_string(),
                    })?;
                    combine(target, name, parsed, is_init);
                }
            }
        }
    }
    let [init_req, run_req] = requests;
    let [init_lim, run_lim] = limits;
    Ok(ResourceRequirements {
        claims: None,
        limits: to_k8s(max_of(init_lim, run_lim)),
        requests: to_k8s(max_of(init_req, run_req)),
    })
}

/// Adds (containers) or maxes (init containers) `q` into `target[name]`.
fn combine(target: &mut Amounts, name: &str, q: Quantity, is_init: bool) {
    match target.get_mut(name) {
        None => {
            target.insert(name.to_string(), q);
        }
        Some(cur) if is_init => {
            if q > *cur {
                *cur = q;
            }
        }
        Some(cur) => *cur = *cur + q,
    }
}

/// Element-wise maximum; on a tie the containers' sum is kept (as
/// Kubernetes' `quota.Max` does).
fn max_of(init: Amounts, run: Amounts) -> Amounts {
    let mut out = run;
    for (name, q) in init {
        match out.get(&name) {
            Some(cur) if *cur >= q => {}
            _ => {
                out.insert(name, q);
            }
        }
    }
    out
}

fn to_k8s(a: Amounts) -> Option<BTreeMap<String, K8sQuantity>> {
    if a.is_empty() {
        return None;
    }
    Some(
        a.into_iter()
            .map(|(k, q)| (k, K8sQuantity(q.to_string())))
            .collect(),
    )
}

/// JSON text of a value that cannot fail to serialize (maps of strings and
/// numbers).
pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use serde_json::json;

    fn spec(v: Value) -> PodSpec {
        serde_json::from_value(v).expect("PodSpec")
    }

    fn res(v: Value) -> String {
        let s = spec(v);
        to_json(&pod_resources(Doc::Value(&json!({})), "spec", &s).expect("resources"))
    }

    #[test]
    fn sums_containers() {
        let out = res(json!({"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"nvidia.com/gpu": "2"}}},
            {"name": "c"}
        ]}));
        assert_eq!(
            out,
            r#"{"limits":{"nvidia.com/gpu":"3"},"requests":{"cpu":"1500m","memory":"1536Mi"}}"#
        );
    }

    #[test]
    fn init_containers_bigger_than_containers_win() {
        let out = res(json!({
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "2", "memory": "100Mi"}}},
                {"name": "i2", "resources": {"requests": {"cpu": "3"}}}
            ],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "1"}}}
            ]
        }));
        // cpu: max(max(2,3)=3, 1+1=2) = 3; memory: max(100Mi, 1Gi) = 1Gi.
        assert_eq!(out, r#"{"requests":{"cpu":"3","memory":"1Gi"}}"#);
    }

    #[test]
    fn resources_only_in_init_containers_are_kept() {
        let out = res(json!({
            "initContainers": [{"name": "i", "resources": {"limits": {"ephemeral-storage": "2G"}}}],
            "containers": [{"name": "a"}]
        }));
        assert_eq!(out, r#"{"limits":{"ephemeral-storage":"2G"}}"#);
    }

    #[test]
    fn no_resources_is_an_empty_object() {
        assert_eq!(res(json!({"containers": [{"name": "a"}]})), "{}");
        assert_eq!(res(json!({"containers": []})), "{}");
    }

    #[test]
    fn bad_quantity_names_the_field() {
        let s = spec(json!({"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"limits": {"memory": "lots"}}}
        ]}));
        let obj = json!({"kind": "Pod", "metadata": {"namespace": "ns", "name": "p"}});
        let err = pod_resources(Doc::Value(&obj), "spec", &s).expect_err("bad quantity");
        assert_eq!(
            err.field(),
            Some("spec.containers[1].resources.limits.memory")
        );
        assert!(err.to_string().contains("Pod ns/p"), "{err}");
        assert!(err.to_string().contains("`lots`"), "{err}");
    }

    #[test]
    fn replica_resources_serialize_in_kubedl_order() {
        let mut m = BTreeMap::new();
        m.insert(
            "Worker".to_string(),
            ReplicaResources {
                resources: ResourceRequirements::default(),
                replicas: 2,
            },
        );
        assert_eq!(to_json(&m), r#"{"Worker":{"resources":{},"replicas":2}}"#);
    }
}
