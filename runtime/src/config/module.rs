//! Where a sink's component comes from, as written under `module:`
//! ([`ModuleRef`]), and the optional digest pin under `sha256:`
//! ([`Sha256`]). Both are checked when the configuration is parsed; the
//! file of a bundled sink is looked for when the plan is made
//! ([`super::locate_builtin`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// The prefix of a `module:` naming a ConfigMap key.
pub(crate) const CONFIGMAP_PREFIX: &str = "configmap:";

/// The prefix of a `module:` naming a bundled sink.
pub(crate) const BUILTIN_PREFIX: &str = "builtin:";

/// A sink's `module:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleRef {
    /// `builtin:NAME`: a sink shipped with kubesink.
    Builtin(Builtin),
    /// A path to a `.wasm` component.
    Path(PathBuf),
    /// `configmap:NAME/KEY`: the `binaryData` key KEY of ConfigMap NAME in
    /// kubesink's own namespace, watched and swapped in when it changes
    /// (see [`crate::modules`]).
    ConfigMap(ConfigMapRef),
}

/// The sinks shipped with kubesink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `builtin:mysql`: KubeDL's tables in MySQL/MariaDB, PostgreSQL or SQLite.
    Mysql,
    /// `builtin:sls`: KubeDL's event log in Simple Log Service.
    Sls,
    /// `builtin:webhook`: chat alerts and templated webhooks
    /// (`sinks/webhook`).
    Webhook,
    /// `builtin:kafka`: every change as a JSON message keyed by uid, through
    /// the host's Kafka producers (`sinks/kafka`).
    Kafka,
}

impl Builtin {
    /// Every bundled sink.
    pub const ALL: [Builtin; 4] = [
        Builtin::Mysql,
        Builtin::Sls,
        Builtin::Webhook,
        Builtin::Kafka,
    ];

    /// Its name after `builtin:`.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Mysql => "mysql",
            Builtin::Sls => "sls",
            Builtin::Webhook => "webhook",
            Builtin::Kafka => "kafka",
        }
    }

    /// The component's file name in the directories of bundled sinks.
    pub fn file_name(self) -> &'static str {
        match self {
            Builtin::Mysql => "kubesink_sink_mysql.wasm",
            Builtin::Sls => "kubesink_sink_sls.wasm",
            Builtin::Webhook => "kubesink_sink_webhook.wasm",
            Builtin::Kafka => "kubesink_sink_kafka.wasm",
        }
    }
}

impl FromStr for Builtin {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Builtin::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                let bundled: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
                format!(
                    "no bundled sink named `{name}` (bundled: {})",
                    bundled.join(", ")
                )
            })
    }
}

impl FromStr for ModuleRef {
    type Err = String;

    /// Parses `builtin:NAME`, `configmap:NAME/KEY` or a path.
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix(BUILTIN_PREFIX) {
            return name.parse().map(ModuleRef::Builtin);
        }
        if let Some(spec) = text.strip_prefix(CONFIGMAP_PREFIX) {
            return ConfigMapRef::parse(spec).map(ModuleRef::ConfigMap);
        }
        if text.trim().is_empty() {
            return Err(
                "names no module: use builtin:NAME, a path to a .wasm component, or configmap:NAME/KEY"
                    .into(),
            );
        }
        Ok(ModuleRef::Path(PathBuf::from(text)))
    }
}

impl fmt::Display for ModuleRef {
    /// As written in the configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleRef::Builtin(b) => write!(f, "{BUILTIN_PREFIX}{}", b.name()),
            ModuleRef::Path(p) => write!(f, "{}", p.display()),
            ModuleRef::ConfigMap(cm) => write!(f, "{CONFIGMAP_PREFIX}{}/{}", cm.name, cm.key),
        }
    }
}

impl<'de> Deserialize<'de> for ModuleRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The ConfigMap key a sink's module comes from (`configmap:NAME/KEY`); the
/// namespace is kubesink's own, known once connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapRef {
    /// The ConfigMap's name.
    pub name: String,
    /// The `binaryData` key.
    pub key: String,
}

impl ConfigMapRef {
    /// Parses `NAME/KEY` (what follows `configmap:`). NAME must be a DNS
    /// subdomain name and KEY a ConfigMap key (`[-._a-zA-Z0-9]+`).
    ///
    /// ```
    /// let r = kubesink::modules::ConfigMapRef::parse("sinks/mysql.wasm.gz").unwrap();
    /// assert_eq!((r.name.as_str(), r.key.as_str()), ("sinks", "mysql.wasm.gz"));
    /// ```
    pub fn parse(spec: &str) -> Result<ConfigMapRef, String> {
        let usage = "use configmap:NAME/KEY, e.g. configmap:kubesink-sinks/mysql.wasm.gz";
        let Some((name, key)) = spec.split_once('/') else {
            return Err(format!("`{CONFIGMAP_PREFIX}{spec}` names no key; {usage}"));
        };
        let name_ok = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !name_ok {
            return Err(format!(
                "`{name}` is not a ConfigMap name (lowercase letters, digits, `-` and `.`); {usage}"
            ));
        }
        let key_ok = !key.is_empty()
            && key.len() <= 253
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !key_ok {
            return Err(format!(
                "`{key}` is not a ConfigMap key (letters, digits, `-`, `_` and `.`); {usage}"
            ));
        }
        Ok(ConfigMapRef {
            name: name.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Whether the key holds a gzip-compressed component.
    pub(crate) fn gzipped(&self) -> bool {
        self.key.ends_with(".gz")
    }
}

impl fmt::Display for ConfigMapRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configmap {} key {}", self.name, self.key)
    }
}

/// A `sha256:` pin: the SHA-256 of the component (64 hex digits, as
/// `sha256sum` prints), kept in lower case.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sha256(String);

impl Sha256 {
    /// The digest, lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.0)
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Sha256 {
    type Err = String;

    fn from_str(pin: &str) -> Result<Self, String> {
        if pin.len() == 64 && pin.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(Sha256(pin.to_ascii_lowercase()))
        } else {
            Err(format!(
                "`{pin}` is not a SHA-256 digest (64 hex digits, as `sha256sum` prints)"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_refs_parse_into_their_variant_and_print_as_written() {
        for (text, want) in [
            ("builtin:mysql", ModuleRef::Builtin(Builtin::Mysql)),
            ("builtin:sls", ModuleRef::Builtin(Builtin::Sls)),
            ("builtin:webhook", ModuleRef::Builtin(Builtin::Webhook)),
            ("builtin:kafka", ModuleRef::Builtin(Builtin::Kafka)),
            ("./sinks/x.wasm", ModuleRef::Path("./sinks/x.wasm".into())),
            (
                "configmap:sinks/mysql.wasm.gz",
                ModuleRef::ConfigMap(ConfigMapRef {
                    name: "sinks".into(),
                    key: "mysql.wasm.gz".into(),
                }),
            ),
        ] {
            let parsed: ModuleRef = text.parse().expect(text);
            assert_eq!(parsed, want, "{text}");
            assert_eq!(parsed.to_string(), text);
        }
        let err = "builtin:nope".parse::<ModuleRef>().unwrap_err();
        assert!(
            err.contains("`nope`") && err.contains("mysql, sls, webhook, kafka"),
            "{err}"
        );
        assert!("configmap:sinks".parse::<ModuleRef>().is_err());
        assert!(" ".parse::<ModuleRef>().is_err());
    }

    #[test]
    fn parses_configmap_refs_and_rejects_bad_names_and_keys() {
        let r = ConfigMapRef::parse("kubesink-sinks/mysql.wasm").expect("valid");
        assert_eq!(
            r,
            ConfigMapRef {
                name: "kubesink-sinks".into(),
                key: "mysql.wasm".into()
            }
        );
        assert!(!r.gzipped());
        assert!(ConfigMapRef::parse("a/b.gz").expect("valid").gzipped());
        for bad in [
            "",
            "sinks",
            "/k",
            "Sinks/k",
            "sinks/",
            "sinks/a/b",
            "-x/k",
            "x/k k",
        ] {
            assert!(ConfigMapRef::parse(bad).is_err(), "{bad}");
        }
        let msg = ConfigMapRef::parse("sinks").unwrap_err();
        assert!(msg.contains("configmap:NAME/KEY"), "{msg}");
    }

    #[test]
    fn sha256_pins_are_64_hex_digits_kept_in_lower_case() {
        let pin: Sha256 = "0A".repeat(32).parse().expect("upper case");
        assert_eq!(pin.as_str(), "0a".repeat(32));
        assert!("0a".repeat(32).parse::<Sha256>().is_ok());
        assert!("abc".parse::<Sha256>().is_err());
        let err = "zz".repeat(32).parse::<Sha256>().unwrap_err();
        assert!(err.contains("sha256sum"), "{err}");
    }
}
