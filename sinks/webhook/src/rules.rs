//! Match and drop rules: which records a route takes.
//!
//! A rule is a set of conditions, all of which must hold (AND). A list
//! condition (`namespace`, `kind`, `type`, `reason`, `record`) holds when
//! the field equals one of its comma-separated values; `message` is a
//! regular expression (the `regex-lite` syntax, Rust's `regex` without
//! Unicode classes) searched in the event message (job and pod: the remark);
//! `label.KEY` holds when the record has label KEY with that value (`*`: any
//! value). A rule without conditions holds for every record.

use regex_lite::Regex;

use crate::record::Fields;

/// One condition.
#[derive(Debug, Clone)]
enum Cond {
    /// `record`: `event`, `job`, `pod`.
    Record(Vec<String>),
    /// `namespace`.
    Namespace(Vec<String>),
    /// `kind`: involved kind (events), job kind, `Pod`.
    Kind(Vec<String>),
    /// `type`: event type.
    Type(Vec<String>),
    /// `reason`: event reason.
    Reason(Vec<String>),
    /// `message`: regex.
    Message(Regex),
    /// `label.KEY`: value, `None` for `*`.
    Label(String, Option<String>),
}

/// A rule: every condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    conds: Vec<Cond>,
}

fn list(value: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if items.is_empty() {
        return Err("is empty (give one value or several, comma-separated)".into());
    }
    Ok(items)
}

fn one_of(items: &[String], v: &str) -> bool {
    items.iter().any(|i| i == v)
}

impl Rule {
    /// Adds the condition of `field` (`namespace`, `label.app`, ...) with
    /// `value`. The error says what is wrong with the value (the caller
    /// names the setting).
    pub fn add(&mut self, field: &str, value: &str) -> Result<(), String> {
        let cond = match field {
            "record" => {
                let kinds = list(value)?;
                if let Some(bad) = kinds
                    .iter()
                    .find(|k| !matches!(k.as_str(), "event" | "job" | "pod"))
                {
                    return Err(format!("`{bad}` is not event, job or pod"));
                }
                Cond::Record(kinds)
            }
            "namespace" => Cond::Namespace(list(value)?),
            "kind" => Cond::Kind(list(value)?),
            "type" => Cond::Type(list(value)?),
            "reason" => Cond::Reason(list(value)?),
            "message" => Cond::Message(
                Regex::new(value).map_err(|e| format!("not a regular expression: {e}"))?,
            ),
            _ => match field.strip_prefix("label.") {
                Some(key) if !key.is_empty() => {
                    let v = value.trim();
                    Cond::Label(key.to_owned(), (v != "*").then(|| v.to_owned()))
                }
                _ => {
                    return Err(format!(
                        "unknown condition `{field}` (record, namespace, kind, type, reason, message, label.KEY)"
                    ));
                }
            },
        };
        self.conds.push(cond);
        Ok(())
    }

    /// Whether the rule has no condition.
    pub fn is_empty(&self) -> bool {
        self.conds.is_empty()
    }

    /// Whether every condition holds for `f`.
    pub fn matches(&self, f: &Fields<'_>) -> bool {
        self.conds.iter().all(|c| match c {
            Cond::Record(l) => one_of(l, f.record),
            Cond::Namespace(l) => one_of(l, f.namespace),
            Cond::Kind(l) => one_of(l, f.kind),
            Cond::Type(l) => one_of(l, f.event_type),
            Cond::Reason(l) => one_of(l, f.reason),
            Cond::Message(re) => re.is_match(f.message),
            Cond::Label(k, v) => f
                .labels
                .iter()
                .any(|(lk, lv)| lk == k && v.as_ref().is_none_or(|v| v == lv)),
        })
    }
}

/// A route's filter: its match rule, then its drop rules (and the sink's).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Records must match this (empty: all).
    pub matching: Rule,
    /// A record matching any of these is dropped.
    pub drops: Vec<(String, Rule)>,
}

impl Filter {
    /// Whether the route takes a record with these fields.
    pub fn takes(&self, f: &Fields<'_>, global_drops: &[(String, Rule)]) -> bool {
        self.matching.matches(f)
            && !self
                .drops
                .iter()
                .chain(global_drops)
                .any(|(_, rule)| rule.matches(f))
    }
}

#[cfg(test)]
mod tests;
