//! `${VAR}` and `${VAR:-default}` expansion of configuration values from the
//! environment, so credentials can come from Secrets through env variables.

use thiserror::Error;

/// A value that could not be expanded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("environment variable `{0}` is not set")]
    Missing(String),
    #[error("unterminated `${{` in `{0}`")]
    Unterminated(String),
}

/// Expands `${VAR}` (an error when unset) and `${VAR:-default}` using
/// `lookup`; `$$` is a literal `$`: `mysql://${HOST}:${PORT:-3306}` is
/// `mysql://db:3306` when only `HOST` (`db`) is set.
pub(crate) fn expand_env(
    value: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, EnvError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| EnvError::Unterminated(value.to_owned()))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            match (lookup(name), default) {
                (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (None, None) => return Err(EnvError::Missing(name.to_owned())),
                (Some(v), None) => out.push_str(&v),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// [`expand_env`] over the process environment.
pub(crate) fn expand_process_env(value: &str) -> Result<String, EnvError> {
    expand_env(value, |k| std::env::var(k).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(k: &str) -> Option<String> {
        match k {
            "A" => Some("1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_and_defaults() {
        assert_eq!(expand_env("x${A}y", get).unwrap(), "x1y");
        assert_eq!(
            expand_env("mysql://${A}:${PORT:-3306}", get).unwrap(),
            "mysql://1:3306"
        );
        assert_eq!(expand_env("${B:-d}", get).unwrap(), "d");
        assert_eq!(expand_env("${EMPTY:-d}", get).unwrap(), "d");
        assert_eq!(expand_env("${EMPTY}", get).unwrap(), "");
        assert_eq!(expand_env("$$A $A", get).unwrap(), "$A $A");
    }

    #[test]
    fn missing_and_unterminated_are_named() {
        assert_eq!(expand_env("${B}", get), Err(EnvError::Missing("B".into())));
        assert!(matches!(
            expand_env("${A", get),
            Err(EnvError::Unterminated(_))
        ));
    }
}
