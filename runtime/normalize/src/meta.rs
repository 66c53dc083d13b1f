//! What every record shares: [`Meta`] from `metadata`, and the tenancy
//! annotation (`kubedl.io/tenancy`) that gives tenant, owner and region.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::{Doc, NormalizeError};
use crate::options::Options;
use crate::record::Meta;
use crate::time;

/// The annotation KubeDL reads tenancy from: JSON
/// `{"tenant": .., "user": .., "idc": .., "region": ..}`.
pub const TENANCY_ANNOTATION: &str = "kubedl.io/tenancy";

/// [`Meta`] of an object, its strings moved out of `m` (uid, name,
/// namespace, resource version and labels are left empty there; the rest,
/// annotations and owner references among them, stays). `metadata.uid` is
/// required (sinks key rows by it); every other field defaults to empty
/// (creation to the epoch).
pub fn meta(obj: Doc<'_>, m: &mut ObjectMeta) -> Result<Meta, NormalizeError> {
    let uid = m
        .uid
        .take()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| NormalizeError::Missing {
            object: obj.describe(),
            field: "metadata.uid".to_string(),
        })?;
    let resource_version = m.resource_version.take().unwrap_or_default();
    Ok(Meta {
        uid,
        name: m.name.take().unwrap_or_default(),
        namespace: m.namespace.take().unwrap_or_default(),
        resource_version_num: resource_version.parse().unwrap_or(0),
        resource_version,
        // A BTreeMap: already sorted by key.
        labels: m.labels.take().into_iter().flatten().collect(),
        created: m
            .creation_timestamp
            .as_ref()
            .map_or_else(time::epoch, time::from_time),
    })
}

/// Tenancy from the `kubedl.io/tenancy` annotation. Absent or malformed
/// annotations give empty fields (KubeDL does the same), never an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct Tenancy {
    /// The tenant.
    pub tenant: String,
    /// The user (the record's `owner`).
    pub user: String,
    /// The IDC (data centre).
    pub idc: String,
    /// The region.
    pub region: String,
}

impl Tenancy {
    /// Reads the annotation of an object's metadata.
    pub fn of(m: &ObjectMeta) -> Self {
        m.annotations
            .as_ref()
            .and_then(|a| a.get(TENANCY_ANNOTATION))
            .and_then(|text| serde_json::from_str::<Tenancy>(text).ok())
            .unwrap_or_default()
    }

    /// The record's region: `--region` when set, else the annotation's
    /// `region`, else its `idc`, else empty.
    pub fn region(&self, opts: &Options) -> String {
        match opts.region.as_deref() {
            Some(r) if !r.is_empty() => r.to_string(),
            _ if !self.region.is_empty() => self.region.clone(),
            _ => self.idc.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use serde_json::json;

    fn om(v: Value) -> ObjectMeta {
        serde_json::from_value(v).expect("ObjectMeta")
    }

    #[test]
    fn meta_sorts_labels_and_parses_versions() {
        let obj = json!({});
        let mut m = om(json!({
            "uid": "u-1", "name": "训练-任务", "namespace": "ml", "resourceVersion": "12345",
            "labels": {"z": "1", "a": "2", "m": "3"},
            "creationTimestamp": "2024-05-01T10:00:00Z"
        }));
        let meta = meta(Doc::Value(&obj), &mut m).expect("meta");
        assert_eq!(meta.name, "训练-任务");
        assert_eq!(meta.resource_version_num, 12345);
        let keys: Vec<_> = meta.labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "m", "z"]);
        assert_eq!(meta.created.seconds, 1_714_557_600);
    }

    #[test]
    fn meta_defaults_missing_fields_but_needs_a_uid() {
        let obj = json!({"kind": "Pod", "metadata": {"name": "p"}});
        let mut m = om(json!({"uid": "u"}));
        let meta = meta(Doc::Value(&obj), &mut m).expect("meta");
        assert_eq!(meta.name, "");
        assert_eq!(meta.resource_version, "");
        assert_eq!(meta.resource_version_num, 0);
        assert_eq!(meta.created.seconds, 0);
        let err = super::meta(Doc::Value(&obj), &mut om(json!({"name": "p"}))).expect_err("no uid");
        assert_eq!(err.field(), Some("metadata.uid"));
        assert_eq!(err.to_string(), "Pod p: missing field `metadata.uid`");
    }

    #[test]
    fn non_numeric_resource_version_is_zero() {
        let mut m = om(json!({"uid": "u", "resourceVersion": "abc"}));
        let meta = meta(Doc::Value(&json!({})), &mut m).expect("meta");
        assert_eq!(meta.resource_version, "abc");
        assert_eq!(meta.resource_version_num, 0);
    }

    #[test]
    fn tenancy_reads_all_fields() {
        let m = om(json!({"annotations": {TENANCY_ANNOTATION:
            r#"{"tenant":"t1","user":"alice","idc":"hz-a","region":"cn-hangzhou"}"#}}));
        let t = Tenancy::of(&m);
        assert_eq!(t.tenant, "t1");
        assert_eq!(t.user, "alice");
        assert_eq!(t.region(&Options::default()), "cn-hangzhou");
        let flag = Options::default().with_region(Some("cn-beijing".into()));
        assert_eq!(t.region(&flag), "cn-beijing");
    }

    #[test]
    fn tenancy_falls_back_to_idc() {
        let m = om(json!({"annotations": {TENANCY_ANNOTATION: r#"{"tenant":"t","idc":"hz-a"}"#}}));
        assert_eq!(Tenancy::of(&m).region(&Options::default()), "hz-a");
    }

    #[test]
    fn malformed_tenancy_is_empty() {
        for bad in ["{not json", r#"{"tenant": 5}"#, "[]", ""] {
            let m = om(json!({"annotations": {TENANCY_ANNOTATION: bad}}));
            assert_eq!(Tenancy::of(&m), Tenancy::default(), "{bad}");
        }
        assert_eq!(Tenancy::of(&om(json!({}))), Tenancy::default());
    }
}
