//! Keeping credentials out of messages: URLs shown without user
//! information, and driver messages scrubbed of every form of the secret.

/// Shows a connection URL without credentials or query:
/// `mysql://user:pw@db:3306/kubedl?ssl-mode=x` → `mysql://db:3306/kubedl`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // `sqlite::memory:` and other opaque forms: keep the scheme only
        // unless it is plainly credential-free.
        let base = url.split('?').next().unwrap_or_default();
        return if base.contains('@') {
            base.split(':').next().unwrap_or_default().to_owned() + ":…"
        } else {
            base.to_owned()
        };
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{path}")
}

/// The parts of a URL that must never be shown: its user information
/// (raw and percent-decoded) and any `password=` query value.
pub(super) fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, password)) = userinfo.split_once(':') {
                secrets.push(password.to_owned());
                secrets.push(percent_decode(password));
            }
            secrets.push(userinfo.to_owned());
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=')
                && k.to_ascii_lowercase().contains("password")
            {
                secrets.push(v.to_owned());
                secrets.push(percent_decode(v));
            }
        }
    }
    secrets.push(url.to_owned());
    secrets.retain(|s| !s.is_empty());
    // Longest first, so that a secret containing another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

pub(super) fn scrub(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_owned();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}
