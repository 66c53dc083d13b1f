//! Why an object could not be normalized: every error names the object
//! (`Kind namespace/name`) and the field at fault (a JSON path such as
//! `spec.containers[0].resources.limits.cpu`).

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a Kubernetes object could not be turned into a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// The document is not a JSON object at all.
    #[error("not a Kubernetes object: the document is a JSON {found}, expected an object")]
    NotAnObject {
        /// The JSON type found (`array`, `string`, ...).
        found: &'static str,
    },
    /// A field the record cannot do without is absent.
    #[error("{object}: missing field `{field}`")]
    Missing {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// Path of the missing field.
        field: String,
    },
    /// A field has the wrong type or an unreadable value.
    #[error("{object}: field `{field}`: {reason}")]
    Invalid {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// Path of the field at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl NormalizeError {
    /// Path of the field at fault, if the error is about a field.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::NotAnObject { .. } => None,
            Self::Missing { field, .. } | Self::Invalid { field, .. } => Some(field),
        }
    }
}

/// Names an object for error messages: `Kind namespace/name`, as far as the
/// (possibly malformed) document tells.
pub fn describe(obj: &Value) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("object");
    let meta = obj.get("metadata");
    let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    let name = field("name").unwrap_or("<unnamed>");
    match field("namespace") {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

/// Joins a parent path and a child path (`spec` + `replicas`).
pub fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// Deserializes `value` (found at `prefix` inside `obj`) into `T`, turning
/// a failure into an error naming the object and the exact field.
pub fn de<T: DeserializeOwned>(
    obj: &Value,
    prefix: &str,
    value: &Value,
) -> Result<T, NormalizeError> {
    // Plain serde first: tracking the path copies every key it passes, and
    // only a failure needs the path, so only a failure decodes again.
    if let Ok(t) = T::deserialize(value) {
        return Ok(t);
    }
    serde_path_to_error::deserialize::<_, T>(value)
        .map_err(|err| field_error(describe(obj), prefix, err.path(), err.inner().to_string()))
}

/// An object as the normalizer reads it: a parsed JSON value, or the JSON
/// text as the API server sent it, decoded straight into the typed form a
/// record needs (no `Value` in between: the live path's hot spot).
#[derive(Debug, Clone, Copy)]
pub enum Doc<'a> {
    /// A parsed document.
    Value(&'a Value),
    /// JSON text of an object of `kind` (list items may omit their `kind`).
    Text {
        /// The object's JSON text.
        json: &'a str,
        /// Its kind, for messages.
        kind: &'a str,
    },
}

impl<'a> From<&'a Value> for Doc<'a> {
    fn from(v: &'a Value) -> Self {
        Doc::Value(v)
    }
}

impl<'a> Doc<'a> {
    /// Names the object for error messages, as [`describe`] does.
    pub fn describe(self) -> String {
        match self {
            Doc::Value(v) => describe(v),
            Doc::Text { json, kind } => match serde_json::from_str::<Value>(json) {
                Ok(Value::Object(mut m)) => {
                    m.entry("kind")
                        .or_insert_with(|| Value::String(kind.to_owned()));
                    describe(&Value::Object(m))
                }
                _ => format!("{kind} <unnamed>"),
            },
        }
    }

    /// The whole object as `T`; errors name the object and the field.
    pub fn de<T: DeserializeOwned>(self) -> Result<T, NormalizeError> {
        let json = match self {
            Doc::Value(v) => return de(v, "", v),
            Doc::Text { json, .. } => json,
        };
        // Plain serde first, as in [`de`]: the path is tracked (every key
        // copied) only when decoding again to report a failure.
        let mut d = serde_json::Deserializer::from_str(json);
        if let Ok(parsed) = T::deserialize(&mut d)
            && d.end().is_ok()
        {
            return Ok(parsed);
        }
        let mut d = serde_json::Deserializer::from_str(json);
        let parsed = serde_path_to_error::deserialize::<_, T>(&mut d).map_err(|err| {
            let inner = err.inner();
            // serde_json adds where in the text; the path says it better.
            let mut reason = inner.to_string();
            let at = format!(" at line {} column {}", inner.line(), inner.column());
            if inner.line() > 0 && reason.ends_with(&at) {
                reason.truncate(reason.len() - at.len());
            }
            field_error(self.describe(), "", err.path(), reason)
        })?;
        d.end().map_err(|e| NormalizeError::Invalid {
            object: self.describe(),
            field: String::new(),
            reason: e.to_string(),
        })?;
        Ok(parsed)
    }

    /// The object as a parsed value (parsed here for text).
    pub fn value(self) -> Result<std::borrow::Cow<'a, Value>, NormalizeError> {
        match self {
            Doc::Value(v) => Ok(std::borrow::Cow::Borrowed(v)),
            Doc::Text { json, .. } => serde_json::from_str(json)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| NormalizeError::Invalid {
                    object: self.describe(),
                    field: String::new(),
                    reason: e.to_string(),
                }),
        }
    }
}

/// The error for a field that failed to deserialize at `path` below
/// `prefix`.
fn field_error(
    object: String,
    prefix: &str,
    path: &serde_path_to_error::Path,
    reason: String,
) -> NormalizeError {
    let path = path.to_string();
    let path = if path == "." { String::new() } else { path };
    // serde reports a missing field at its parent; name the field itself.
    if let Some(missing) = reason
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return NormalizeError::Missing {
            object,
            field: join(prefix, &join(&path, missing)),
        };
    }
    NormalizeError::Invalid {
        object,
        field: join(prefix, &path),
        reason,
    }
}

/// The JSON type of a value, for messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        count: i32,
        name: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
    }

    #[test]
    fn describe_names_kind_namespace_and_name() {
        let o = json!({"kind": "Pod", "metadata": {"namespace": "ml", "name": "p-0"}});
        assert_eq!(describe(&o), "Pod ml/p-0");
        let o = json!({"kind": "Node", "metadata": {"name": "n1"}});
        assert_eq!(describe(&o), "Node n1");
        assert_eq!(describe(&json!(3)), "object <unnamed>");
    }

    #[test]
    fn de_names_the_field_with_a_wrong_type() {
        let obj = json!({"kind": "X", "metadata": {"name": "a"}, "spec": {"items": [{"count": 1, "name": "n"}, {"count": "two", "name": "m"}]}});
        let err = de::<Outer>(&obj, "spec", &obj["spec"]).expect_err("wrong type");
        assert_eq!(err.field(), Some("spec.items[1].count"));
        assert!(
            err.to_string()
                .starts_with("X a: field `spec.items[1].count`"),
            "{err}"
        );
    }

    #[test]
    fn de_names_a_missing_field() {
        let obj = json!({"spec": {"items": [{"count": 1}]}});
        let err = de::<Outer>(&obj, "spec", &obj["spec"]).expect_err("missing");
        assert_eq!(err.field(), Some("spec.items[0].name"));
        assert!(matches!(err, NormalizeError::Missing { .. }));
    }

    #[test]
    fn join_handles_indexes_and_empties() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a", ""), "a");
        assert_eq!(join("a", "b"), "a.b");
        assert_eq!(join("a", "[0]"), "a[0]");
    }
}
