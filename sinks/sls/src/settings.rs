//! The sink's settings (the `settings` map of its configuration) and the
//! SLS endpoint they name.

use std::fmt;

/// Most bytes of raw (uncompressed) body SLS accepts in one PutLogs.
pub const SLS_MAX_RAW_BODY: usize = 10 << 20;
/// Most bytes of one value SLS accepts.
pub const SLS_MAX_VALUE: usize = 1 << 20;
/// Most bytes of a topic or source SLS accepts.
pub const SLS_MAX_TOPIC: usize = 128;
/// Default of `max_in_flight`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;
/// Largest `max_in_flight`.
pub const MAX_IN_FLIGHT: usize = 64;

/// A setting is missing or wrong. Messages never contain the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsError {
    /// A key this sink does not know.
    Unknown(String),
    /// A required key is absent or empty.
    Missing(&'static str),
    /// A key has a value this sink cannot use.
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(k) => write!(f, "sls sink: unknown setting `{k}`"),
            Self::Missing(k) => write!(f, "sls sink: setting `{k}` is required"),
            Self::Invalid { key, reason } => write!(f, "sls sink: setting `{key}`: {reason}"),
        }
    }
}

impl std::error::Error for SettingsError {}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

/// Where SLS is: from `cn-hangzhou.log.aliyuncs.com` (https) or a URL with
/// scheme and port (`http://127.0.0.1:9000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The scheme.
    pub scheme: Scheme,
    /// Host name or IPv4 address, without the port.
    pub host: String,
    /// Explicit port, when given.
    pub port: Option<u16>,
}

impl Endpoint {
    /// Parses an endpoint setting.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let (scheme, rest) = match value.split_once("://") {
            Some((s, rest)) => match s.to_ascii_lowercase().as_str() {
                "http" => (Scheme::Http, rest),
                "https" => (Scheme::Https, rest),
                other => return Err(format!("scheme `{other}` is not http or https")),
            },
            None => (Scheme::Https, value),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(format!(
                "`{value}` must be a host or scheme://host[:port], without a path"
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => {
                let port = p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                    format!("port `{p}` in `{value}` is not a number in 1..=65535")
                })?;
                (h, Some(port))
            }
            None => (rest, None),
        };
        let valid = !host.is_empty()
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid {
            return Err(format!(
                "host `{host}` in `{value}` is not a DNS name or IPv4 address"
            ));
        }
        Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether the host is an IPv4 address (the official SDK then connects
    /// to it and names the project only in the `Host` header).
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::Ipv4Addr>().is_ok()
    }

    /// `host[:port]` with the project in front unless the host is an IP:
    /// what the request connects to.
    pub fn authority(&self, project: &str) -> String {
        let host = if self.is_ip() {
            self.host.clone()
        } else {
            format!("{project}.{}", self.host)
        };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }

    /// The `Host` header to send explicitly: `<project>.<ip>` (no port) for
    /// an IP endpoint, like the official SDK; `None` otherwise (the
    /// authority already names the project).
    pub fn host_header(&self, project: &str) -> Option<String> {
        self.is_ip().then(|| format!("{project}.{}", self.host))
    }
}

/// Compression of PutLogs bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw LZ4 block (`x-log-compresstype: lz4`).
    Lz4,
    /// Uncompressed.
    None,
}

/// Parsed settings. See the crate docs for the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where SLS is.
    pub endpoint: Endpoint,
    /// SLS project.
    pub project: String,
    /// Logstore events go to (and jobs/pods when enabled).
    pub logstore: String,
    /// AccessKeyId.
    pub access_key_id: String,
    /// AccessKeySecret (never printed).
    pub access_key_secret: String,
    /// STS token, sent as `x-acs-security-token`.
    pub security_token: Option<String>,
    /// Topic of event logs. Default "" (KubeDL's).
    pub topic: String,
    /// Whether events are written. Default true.
    pub events: bool,
    /// Topic of job logs; `None` (default): jobs are not written.
    pub jobs_topic: Option<String>,
    /// Topic of pod logs; `None` (default): pods are not written.
    pub pods_topic: Option<String>,
    /// Most raw bytes per PutLogs body. Default and maximum 10 MiB.
    pub max_body_bytes: usize,
    /// Most logs per PutLogs. Default 4096.
    pub max_logs_per_request: usize,
    /// Body compression. Default lz4.
    pub compression: Compression,
    /// Most PutLogs requests of a batch outstanding at once. Default 8.
    pub max_in_flight: usize,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("project", &self.project)
            .field("logstore", &self.logstore)
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .field("topic", &self.topic)
            .field("events", &self.events)
            .field("jobs_topic", &self.jobs_topic)
            .field("pods_topic", &self.pods_topic)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_logs_per_request", &self.max_logs_per_request)
            .field("compression", &self.compression)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

fn topic(key: &'static str, v: &str) -> Result<String, SettingsError> {
    if v.len() > SLS_MAX_TOPIC {
        return Err(SettingsError::Invalid {
            key,
            reason: format!("longer than {SLS_MAX_TOPIC} bytes"),
        });
    }
    Ok(v.to_string())
}

fn number(key: &'static str, v: &str, min: usize, max: usize) -> Result<usize, SettingsError> {
    v.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| SettingsError::Invalid {
            key,
            reason: format!("`{v}` is not a number in {min}..={max}"),
        })
}

fn boolean(key: &'static str, v: &str) -> Result<bool, SettingsError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(SettingsError::Invalid {
            key,
            reason: format!("`{v}` is not true or false"),
        }),
    }
}

impl Settings {
    /// Parses the settings map. Unknown keys are an error naming the key.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, SettingsError> {
        let mut endpoint = None;
        let mut project = None;
        let mut logstore = None;
        let mut key_id = None;
        let mut secret = None;
        let mut s = Settings {
            endpoint: Endpoint {
                scheme: Scheme::Https,
                host: String::new(),
                port: None,
            },
            project: String::new(),
            logstore: String::new(),
            access_key_id: String::new(),
            access_key_secret: String::new(),
            security_token: None,
            topic: String::new(),
            events: true,
            jobs_topic: None,
            pods_topic: None,
            max_body_bytes: SLS_MAX_RAW_BODY,
            max_logs_per_request: 4096,
            compression: Compression::Lz4,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        };
        for (k, v) in pairs {
            match k.as_str() {
                "endpoint" => {
                    endpoint =
                        Some(Endpoint::parse(v).map_err(|reason| SettingsError::Invalid {
                            key: "endpoint",
                            reason,
                        })?)
                }
                "project" => project = Some(v.trim().to_string()),
                "logstore" => logstore = Some(v.trim().to_string()),
                "access_key_id" => key_id = Some(v.trim().to_string()),
                "access_key_secret" => secret = Some(v.clone()),
                "security_token" => s.security_token = Some(v.clone()).filter(|t| !t.is_empty()),
                "topic" => s.topic = topic("topic", v)?,
                "events" => s.events = boolean("events", v)?,
                "jobs_topic" => s.jobs_topic = Some(topic("jobs_topic", v)?),
                "pods_topic" => s.pods_topic = Some(topic("pods_topic", v)?),
                "max_body_bytes" => {
                    s.max_body_bytes = number("max_body_bytes", v, 64 << 10, SLS_MAX_RAW_BODY)?
                }
                "max_logs_per_request" => {
                    s.max_logs_per_request = number("max_logs_per_request", v, 1, 4096)?
                }
                "max_in_flight" => s.max_in_flight = number("max_in_flight", v, 1, MAX_IN_FLIGHT)?,
                "compression" => {
                    s.compression = match v.trim() {
                        "lz4" => Compression::Lz4,
                        "none" => Compression::None,
                        other => {
                            return Err(SettingsError::Invalid {
                                key: "compression",
                                reason: format!("`{other}` is not lz4 or none"),
                            });
                        }
                    }
                }
                other => return Err(SettingsError::Unknown(other.to_string())),
            }
        }
        let need = |v: Option<String>, key: &'static str| {
            v.filter(|s| !s.is_empty())
                .ok_or(SettingsError::Missing(key))
        };
        s.endpoint = endpoint.ok_or(SettingsError::Missing("endpoint"))?;
        s.project = need(project, "project")?;
        s.logstore = need(logstore, "logstore")?;
        s.access_key_id = need(key_id, "access_key_id")?;
        s.access_key_secret = need(secret, "access_key_secret")?;
        let name_ok = |n: &str| {
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name_ok(&s.project) {
            return Err(SettingsError::Invalid {
                key: "project",
                reason: format!(
                    "`{}` has characters other than a-z, 0-9, - and _",
                    s.project
                ),
            });
        }
        if !name_ok(&s.logstore) {
            return Err(SettingsError::Invalid {
                key: "logstore",
                reason: format!(
                    "`{}` has characters other than a-z, 0-9, - and _",
                    s.logstore
                ),
            });
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [
            ("endpoint", "cn-hangzhou.log.aliyuncs.com"),
            ("project", "proj"),
            ("logstore", "events"),
            ("access_key_id", "id"),
            ("access_key_secret", "s3cret"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        v
    }

    #[test]
    fn host_endpoint_is_https_with_project_in_authority() {
        let s = Settings::parse(&pairs(&[])).expect("valid");
        assert_eq!(s.endpoint.scheme, Scheme::Https);
        assert_eq!(
            s.endpoint.authority("proj"),
            "proj.cn-hangzhou.log.aliyuncs.com"
        );
        assert_eq!(s.endpoint.host_header("proj"), None);
        assert_eq!(s.topic, "");
        assert!(s.events && s.jobs_topic.is_none() && s.pods_topic.is_none());
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn ip_endpoint_connects_to_ip_and_names_project_in_host() {
        let e = Endpoint::parse("http://127.0.0.1:9000").expect("valid");
        assert_eq!(e.scheme, Scheme::Http);
        assert_eq!(e.authority("proj"), "127.0.0.1:9000");
        assert_eq!(e.host_header("proj").as_deref(), Some("proj.127.0.0.1"));
    }

    #[test]
    fn bad_endpoints_are_rejected_with_reasons() {
        for bad in [
            "",
            "ftp://x",
            "http://h:0",
            "http://h:99999",
            "http://h/path",
            "a..b",
            "http://",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} accepted");
        }
        let err = Settings::parse(&pairs(&[("endpoint", "ftp://x")])).expect_err("invalid");
        assert!(err.to_string().contains("endpoint"), "{err}");
    }

    #[test]
    fn unknown_and_missing_keys_are_named() {
        let err = Settings::parse(&pairs(&[("logstor", "x")])).expect_err("unknown");
        assert_eq!(err, SettingsError::Unknown("logstor".into()));
        let mut p = pairs(&[]);
        p.retain(|(k, _)| k != "access_key_secret");
        let err = Settings::parse(&p).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "sls sink: setting `access_key_secret` is required"
        );
    }

    #[test]
    fn optional_keys_parse() {
        let s = Settings::parse(&pairs(&[
            ("jobs_topic", "jobs"),
            ("pods_topic", "pods"),
            ("events", "false"),
            ("security_token", "tok"),
            ("max_logs_per_request", "10"),
            ("compression", "none"),
            ("max_in_flight", "3"),
        ]))
        .expect("valid");
        assert_eq!(s.jobs_topic.as_deref(), Some("jobs"));
        assert_eq!(s.pods_topic.as_deref(), Some("pods"));
        assert!(!s.events);
        assert_eq!(s.security_token.as_deref(), Some("tok"));
        assert_eq!(s.max_logs_per_request, 10);
        assert_eq!(s.compression, Compression::None);
        assert_eq!(s.max_in_flight, 3);
        assert_eq!(
            Settings::parse(&pairs(&[])).expect("valid").max_in_flight,
            DEFAULT_MAX_IN_FLIGHT
        );
        assert!(Settings::parse(&pairs(&[("max_logs_per_request", "0")])).is_err());
        for bad in ["0", "65", "many"] {
            let err = Settings::parse(&pairs(&[("max_in_flight", bad)])).expect_err(bad);
            assert!(
                err.to_string().contains("`max_in_flight`") && err.to_string().contains("1..=64"),
                "{err}"
            );
        }
    }
}
