//! [`Secret`]: a password, key or DSN whose `Debug` and `Display` show
//! `[REDACTED]`, held in a `secrecy::SecretString` (wiped when dropped).
//! Read it with [`Secret::expose`] at the one place that needs the value.
//!
//! ```
//! use kubesink_host::secret::Secret;
//! let s = Secret::from("mysql://u:hunter2@db/x");
//! assert_eq!(format!("{s:?} {s}"), "[REDACTED] [REDACTED]");
//! assert_eq!(s.expose(), "mysql://u:hunter2@db/x");
//! ```

use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};

/// A secret string (see the module docs).
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// The value, for the one place that uses it (never for a log).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(SecretString::from(s))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(SecretString::from(s))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            password: Secret,
        }
        let h = Holder {
            password: Secret::from("s3cret-pass"),
        };
        let shown = format!("{h:?} {h:#?} {}", h.password);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("[REDACTED]"), "{shown}");
        assert_eq!(h.password, Secret::from("s3cret-pass".to_owned()));
    }
}
