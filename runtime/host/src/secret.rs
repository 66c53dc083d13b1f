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

/// Whether a sink setting named `key` holds a secret by its name
/// (`access_key_secret`, `password`, `security_token`,
/// `header.Authorization`, `api_key`, ...).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "secret",
        "password",
        "passwd",
        "token",
        "credential",
        "authorization",
        "api_key",
        "apikey",
        "private_key",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// Sink settings for `Debug`: the values of secret keys
/// ([`is_secret_key`]) shown as `[REDACTED]`.
pub struct RedactedSettings<'a>(pub &'a [(String, String)]);

impl fmt::Debug for RedactedSettings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (k, v) in self.0 {
            if is_secret_key(k) {
                list.entry(&(k, "[REDACTED]"));
            } else {
                list.entry(&(k, v));
            }
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_settings_are_redacted_by_name() {
        let settings = vec![
            ("endpoint".to_owned(), "http://127.0.0.1:9000".to_owned()),
            ("access_key_id".to_owned(), "id".to_owned()),
            (
                "access_key_secret".to_owned(),
                "kubesink-test-secret".to_owned(),
            ),
            ("security_token".to_owned(), "sts-token-value".to_owned()),
            ("header.Authorization".to_owned(), "Bearer abc".to_owned()),
        ];
        let shown = format!("{:?}", RedactedSettings(&settings));
        for secret in ["kubesink-test-secret", "sts-token-value", "Bearer abc"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("127.0.0.1:9000") && shown.contains("\"id\""),
            "{shown}"
        );
    }

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
