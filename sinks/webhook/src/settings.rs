//! The sink's settings: flat keys (the host passes `settings:` as string
//! pairs), grouped into routes. See the README for the table of keys.
//!
//! ```yaml
//! settings:
//!   route.oncall.url: https://hooks.slack.com/services/${SLACK_PATH}
//!   route.oncall.format: slack
//!   route.oncall.match.type: Warning
//!   route.oncall.drop.probes.reason: Unhealthy
//!   drop.system.namespace: kube-system
//! ```

use std::collections::BTreeMap;

use crate::format::Format;
use crate::rules::{Filter, Rule};

/// A setting is missing or wrong; names the key, never a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook sink: setting `{key}`: {reason}")]
pub struct SettingsError {
    /// The key at fault.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

fn err(key: &str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (tests, in-cluster receivers).
    Http,
    /// HTTPS.
    Https,
}

/// A receiver's URL, split as `wasi:http` wants it.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    /// Scheme.
    pub scheme: Scheme,
    /// `host[:port]`.
    pub authority: String,
    /// Path and query (`/` at least).
    pub path_with_query: String,
}

impl std::fmt::Debug for Url {
    /// Scheme and authority only: the path and query of a chat webhook
    /// are its credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.origin())
    }
}

impl Url {
    /// Parses `http(s)://host[:port][/path][?query]`.
    pub fn parse(value: &str) -> Result<Url, String> {
        let v = value.trim();
        let (scheme, rest) = match v.split_once("://") {
            Some(("https", r)) => (Scheme::Https, r),
            Some(("http", r)) => (Scheme::Http, r),
            _ => return Err("must start with https:// or http://".into()),
        };
        if rest.contains('#') {
            return Err("must not have a #fragment".into());
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty()
            || authority.contains('@')
            || authority.contains(char::is_whitespace)
        {
            return Err("needs a host, without user:password@".into());
        }
        let path = if path.starts_with('?') || path.is_empty() {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Url {
            scheme,
            authority: authority.to_ascii_lowercase(),
            path_with_query: path,
        })
    }

    /// `scheme://authority`: what messages name (no path, no query).
    pub fn origin(&self) -> String {
        let s = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{s}://{}", self.authority)
    }
}

/// A rate limit: `count` messages per `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Messages per period.
    pub count: u32,
    /// The period.
    pub period_ms: u64,
}

/// Parses a duration: `500ms`, `30s`, `5m`, `1h`.
pub fn duration_ms(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{v}` is not a duration like 500ms, 30s, 5m, 1h"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("`{v}` is not a duration like 500ms, 30s, 5m, 1h")),
    };
    Ok(ms)
}

/// Parses a rate limit: `20/1m`, or `none`.
fn rate(v: &str) -> Result<Option<Rate>, String> {
    if v.trim() == "none" {
        return Ok(None);
    }
    let (count, period) = v
        .split_once('/')
        .ok_or_else(|| format!("`{v}` is not COUNT/PERIOD (e.g. 20/1m) or none"))?;
    let count: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| format!("`{count}` is not a count of at least 1"))?;
    let period_ms = duration_ms(period)?;
    if period_ms == 0 {
        return Err("the period must be longer than 0".into());
    }
    Ok(Some(Rate { count, period_ms }))
}

/// One route.
#[derive(Clone)]
pub struct Route {
    /// Its name (`route.NAME.*`).
    pub name: String,
    /// Where to send.
    pub url: Url,
    /// How.
    pub format: Format,
    /// Signing secret (DingTalk, Feishu).
    pub secret: Option<String>,
    /// Template source, rendered per record.
    pub template: Option<String>,
    /// Title of chat messages.
    pub title: String,
    /// DingTalk, WeChat Work: `text` messages instead of `markdown`.
    pub plain: bool,
    /// Most records per message.
    pub batch: usize,
    /// Rate limit, `None`: unlimited.
    pub rate: Option<Rate>,
    /// Records older than this (by their own time) are not sent.
    pub max_age_ms: Option<u64>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Which records it takes.
    pub filter: Filter,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("batch", &self.batch)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// Most bytes of message text per request: the format's limit (WeChat
    /// Work: 2,048 bytes for text messages).
    pub fn max_text(&self) -> usize {
        if self.plain && self.format == Format::WeChat {
            2_000
        } else {
            self.format.max_text()
        }
    }
}

/// Parsed settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Routes, by name.
    pub routes: Vec<Route>,
    /// Drop rules of every route.
    pub drops: Vec<(String, Rule)>,
    /// Longest total wait for `Retry-After` inside one `write`.
    pub wait_in_call_ms: u64,
}

/// Default of `wait_in_call`.
pub const DEFAULT_WAIT_IN_CALL_MS: u64 = 5_000;
/// Largest `wait_in_call` (the host's call deadline is 30 s by default).
pub const MAX_WAIT_IN_CALL_MS: u64 = 20_000;

fn name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `drop.RULE.FIELD` → adds to `drops`.
fn add_drop(
    drops: &mut Vec<(String, Rule)>,
    key: &str,
    rest: &str,
    value: &str,
) -> Result<(), SettingsError> {
    let (rule, field) = rest
        .split_once('.')
        .filter(|(r, _)| name_ok(r))
        .ok_or_else(|| {
            err(
                key,
                "drop rules are drop.RULE.FIELD (e.g. drop.probes.reason)",
            )
        })?;
    let i = match drops.iter().position(|(n, _)| n == rule) {
        Some(i) => i,
        None => {
            drops.push((rule.to_owned(), Rule::default()));
            drops.len() - 1
        }
    };
    drops[i].1.add(field, value).map_err(|r| err(key, r))
}

impl Config {
    /// Parses the settings map.
    pub fn parse(settings: &[(String, String)]) -> Result<Config, SettingsError> {
        let mut drops = Vec::new();
        let mut wait_in_call_ms = DEFAULT_WAIT_IN_CALL_MS;
        let mut by_route: BTreeMap<String, Vec<(&str, &str, &str)>> = BTreeMap::new();
        for (key, value) in settings {
            if key == "wait_in_call" {
                wait_in_call_ms = duration_ms(value)
                    .and_then(|ms| {
                        if ms > MAX_WAIT_IN_CALL_MS {
                            Err(format!("at most {}s", MAX_WAIT_IN_CALL_MS / 1000))
                        } else {
                            Ok(ms)
                        }
                    })
                    .map_err(|r| err(key, r))?;
            } else if let Some(rest) = key.strip_prefix("drop.") {
                add_drop(&mut drops, key, rest, value)?;
            } else if let Some(rest) = key.strip_prefix("route.") {
                let (name, field) = rest
                    .split_once('.')
                    .filter(|(n, _)| name_ok(n))
                    .ok_or_else(|| {
                        err(
                            key,
                            "route settings are route.NAME.FIELD, NAME of letters, digits, - and _",
                        )
                    })?;
                by_route
                    .entry(name.to_owned())
                    .or_default()
                    .push((key, field, value));
            } else {
                return Err(err(
                    key,
                    "unknown setting (route.NAME.FIELD, drop.RULE.FIELD, wait_in_call)",
                ));
            }
        }
        if by_route.is_empty() {
            return Err(err(
                "route.NAME.url",
                "no route: give at least one route.NAME.url",
            ));
        }
        let routes = by_route
            .into_iter()
            .map(|(name, fields)| Self::route(name, &fields))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            routes,
            drops,
            wait_in_call_ms,
        })
    }

    fn route(name: String, fields: &[(&str, &str, &str)]) -> Result<Route, SettingsError> {
        let get = |f: &str| fields.iter().find(|(_, k, _)| *k == f).map(|(_, _, v)| *v);
        let url_key = format!("route.{name}.url");
        let url = Url::parse(get("url").ok_or_else(|| err(&url_key, "is required"))?)
            .map_err(|r| err(&url_key, r))?;
        let format_key = format!("route.{name}.format");
        let format = get("format")
            .map(Format::parse)
            .transpose()
            .map_err(|r| err(&format_key, r))?
            .unwrap_or(Format::Json);
        let mut route = Route {
            url,
            format,
            secret: None,
            template: None,
            title: "kubesink".into(),
            plain: false,
            batch: format.default_batch(),
            rate: format.default_rate().map(|(count, secs)| Rate {
                count,
                period_ms: secs * 1000,
            }),
            max_age_ms: None,
            headers: Vec::new(),
            filter: Filter::default(),
            name,
        };
        for (key, field, value) in fields {
            match *field {
                "url" | "format" => {}
                "secret" if format.signs() => {
                    if value.is_empty() {
                        return Err(err(key, "is empty"));
                    }
                    route.secret = Some((*value).to_owned());
                }
                "secret" => {
                    return Err(err(
                        key,
                        format!(
                            "format {} is not signed (only dingtalk and feishu)",
                            format.name()
                        ),
                    ));
                }
                "template" => route.template = Some((*value).to_owned()),
                "msgtype" if matches!(format, Format::DingTalk | Format::WeChat) => {
                    route.plain = match value.trim() {
                        "text" => true,
                        "markdown" => false,
                        other => {
                            return Err(err(key, format!("`{other}` is not text or markdown")));
                        }
                    };
                }
                "msgtype" => {
                    return Err(err(
                        key,
                        format!(
                            "format {} has one message type (msgtype: dingtalk and wechat)",
                            format.name()
                        ),
                    ));
                }
                "title" => route.title = (*value).to_owned(),
                "batch" => {
                    route.batch = value
                        .trim()
                        .parse()
                        .ok()
                        .filter(|b| (1..=1000).contains(b))
                        .ok_or_else(|| {
                            err(key, format!("`{value}` is not a number in 1..=1000"))
                        })?;
                }
                "rate_limit" => route.rate = rate(value).map_err(|r| err(key, r))?,
                "max_age" if value.trim() == "none" => route.max_age_ms = None,
                "max_age" => route.max_age_ms = Some(duration_ms(value).map_err(|r| err(key, r))?),
                _ => {
                    if let Some(h) = field.strip_prefix("header.") {
                        let valid = !h.is_empty()
                            && h.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                        if !valid {
                            return Err(err(key, "is not a valid header name"));
                        }
                        route
                            .headers
                            .push((h.to_ascii_lowercase(), (*value).to_owned()));
                    } else if let Some(cond) = field.strip_prefix("match.") {
                        route
                            .filter
                            .matching
                            .add(cond, value)
                            .map_err(|r| err(key, r))?;
                    } else if let Some(rest) = field.strip_prefix("drop.") {
                        add_drop(&mut route.filter.drops, key, rest, value)?;
                    } else {
                        return Err(err(
                            key,
                            "unknown route setting (url, format, secret, template, title, msgtype, batch, rate_limit, max_age, header.NAME, match.FIELD, drop.RULE.FIELD)",
                        ));
                    }
                }
            }
        }
        Ok(route)
    }
}

#[cfg(test)]
mod tests;
