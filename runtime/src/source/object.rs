//! What the watches, listings, catch-ups and replays decode an object into: the few
//! metadata fields they read themselves, and the object's JSON text as the
//! API server sent it, which the normalizer decodes once, straight into
//! its typed form ([`kubesink_normalize::normalize_json`]).
//!
//! kube's `DynamicObject` held the object as a `serde_json::Value`, which
//! was then converted into another `Value` and from that into the typed
//! form: three decodings, a third of `kubesink run`'s CPU per event in the
//! live profile (docs/benchmarks.md, issue 18).

use std::borrow::Cow;

use kube::api::{ApiResource, ObjectMeta};
use kube::core::{DynamicResourceScope, Resource};
use kubesink_normalize::record::Timestamp;
use serde::Deserialize;
use serde_json::value::RawValue;

/// A watched or listed object: its identity, and its JSON text.
#[derive(Debug, Clone)]
pub struct RawObject {
    /// `apiVersion`, when the object names it (list items may not).
    pub api_version: Option<String>,
    /// `kind`, when the object names it.
    pub kind: Option<String>,
    /// name, namespace, uid and resourceVersion only.
    pub metadata: ObjectMeta,
    /// `metadata.deletionTimestamp`, as written.
    pub deletion_timestamp: Option<String>,
    /// The kind of the owner reference marked `controller`, if any.
    pub controller_kind: Option<String>,
    /// The whole object, as sent.
    pub json: Box<RawValue>,
}

/// The fields read from the text besides keeping it; all others are
/// skipped without being built.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<HeadMeta>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct HeadMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    deletion_timestamp: Option<String>,
    owner_references: Option<Vec<HeadOwner>>,
}

#[derive(Deserialize)]
struct HeadOwner {
    kind: String,
    #[serde(default)]
    controller: Option<bool>,
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = Box::<RawValue>::deserialize(d)?;
        let head: Head = serde_json::from_str(json.get()).map_err(serde::de::Error::custom)?;
        let meta = head.metadata.unwrap_or_default();
        let controller_kind = meta
            .owner_references
            .into_iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.kind);
        Ok(Self {
            api_version: head.api_version,
            kind: head.kind,
            metadata: ObjectMeta {
                name: meta.name,
                namespace: meta.namespace,
                uid: meta.uid,
                resource_version: meta.resource_version,
                ..ObjectMeta::default()
            },
            deletion_timestamp: meta.deletion_timestamp,
            controller_kind,
            json,
        })
    }
}

impl RawObject {
    /// `metadata.deletionTimestamp`, if set and readable (as
    /// [`kubesink_normalize::removed_at`]).
    pub fn removed_at(&self) -> Option<Timestamp> {
        self.deletion_timestamp
            .as_deref()
            .and_then(kubesink_normalize::time::parse)
    }
}

/// As kube's `DynamicObject`: the type is known at run time.
impl Resource for RawObject {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::WatchEvent;
    use kube::core::ObjectList;

    const POD: &str = r#"{"metadata":{"name":"p","namespace":"ns","uid":"u-1","resourceVersion":"42",
        "deletionTimestamp":"2024-05-01T12:00:00Z","labels":{"a":"b"},
        "ownerReferences":[{"apiVersion":"v1","kind":"ReplicaSet","name":"r","uid":"x"},
                           {"apiVersion":"kubeflow.org/v1","kind":"TFJob","name":"j","uid":"y","controller":true}]},
        "spec":{"containers":[{"name":"c"}]}}"#;

    #[test]
    fn a_watch_event_keeps_the_text_and_reads_the_identity() {
        let line = format!(r#"{{"type":"MODIFIED","object":{POD}}}"#);
        let WatchEvent::Modified(o) =
            serde_json::from_str::<WatchEvent<RawObject>>(&line).expect("watch event")
        else {
            panic!("not MODIFIED")
        };
        assert_eq!(o.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(o.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(
            (o.metadata.namespace.as_deref(), o.metadata.name.as_deref()),
            (Some("ns"), Some("p"))
        );
        assert_eq!(
            o.deletion_timestamp.as_deref(),
            Some("2024-05-01T12:00:00Z")
        );
        assert_eq!(o.controller_kind.as_deref(), Some("TFJob"));
        assert_eq!((o.api_version, o.kind), (None, None));
        let text: serde_json::Value = serde_json::from_str(o.json.get()).expect("json");
        let sent: serde_json::Value = serde_json::from_str(POD).expect("json");
        assert_eq!(text, sent);
    }

    #[test]
    fn a_list_page_decodes_its_items() {
        let page = format!(
            r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"7","continue":"c"}},"items":[{POD},{{"apiVersion":"v1","kind":"Pod","metadata":{{"uid":"u-2"}}}}]}}"#
        );
        let list: ObjectList<RawObject> = serde_json::from_str(&page).expect("list");
        assert_eq!(list.items.len(), 2);
        assert_eq!(list.metadata.continue_.as_deref(), Some("c"));
        let second = &list.items[1];
        assert_eq!(
            (second.api_version.as_deref(), second.kind.as_deref()),
            (Some("v1"), Some("Pod"))
        );
        assert_eq!(second.controller_kind, None);
    }

    #[test]
    fn malformed_metadata_is_an_error() {
        let err = serde_json::from_str::<RawObject>(r#"{"metadata":{"uid":17}}"#)
            .expect_err("a numeric uid");
        assert!(err.to_string().contains("invalid type"), "{err}");
    }
}
