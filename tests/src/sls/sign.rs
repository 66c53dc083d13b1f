//! SLS request signature, version 1 (HMAC-SHA1), as the emulator verifies it.
//!
//! This is written from the protocol description (docs/reference.md, the official
//! Python SDK's `auth.py`), independently of the sls sink's signer, so the
//! two check each other; the conformance test checks this one against the
//! unchanged Python SDK.
//!
//! String to sign:
//!
//! ```text
//! METHOD \n CONTENT-MD5 \n CONTENT-TYPE \n DATE \n
//! sorted lowercase `x-log-*` / `x-acs-*` headers as `k:v\n` (not `x-log-date`,
//! not `x-log-meta-*`)
//! path [ `?` sorted `k=v` joined by `&`, values raw (percent-decoded) ]
//! ```
//!
//! The signature is `base64(hmac_sha1(secret, string_to_sign))`, sent as
//! `Authorization: LOG <AccessKeyId>:<signature>`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The parts of a request that the v1 signature covers.
#[derive(Debug, Clone, Default)]
pub struct SignedParts<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The `Content-MD5` header, or "" when absent.
    pub content_md5: &'a str,
    /// The `Content-Type` header, or "" when absent.
    pub content_type: &'a str,
    /// The `Date` header (RFC 1123).
    pub date: &'a str,
    /// All request headers (any case); only `x-log-*` and `x-acs-*` count.
    pub headers: Vec<(&'a str, &'a str)>,
    /// The request path, e.g. `/logstores/events/shards/lb`.
    pub path: &'a str,
    /// Query parameters, decoded.
    pub query: Vec<(&'a str, &'a str)>,
}

/// Whether a header takes part in the signature.
fn is_signed_header(lower: &str) -> bool {
    (lower.starts_with("x-log-") || lower.starts_with("x-acs-"))
        && lower != "x-log-date"
        && !lower.starts_with("x-log-meta-")
}

/// Builds the v1 string to sign.
pub fn string_to_sign(parts: &SignedParts<'_>) -> String {
    let mut out = format!(
        "{}\n{}\n{}\n{}\n",
        parts.method, parts.content_md5, parts.content_type, parts.date
    );
    let mut headers: Vec<(String, &str)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .filter(|(k, _)| is_signed_header(k))
        .collect();
    headers.sort();
    for (k, v) in headers {
        out.push_str(&k);
        out.push(':');
        out.push_str(v);
        out.push('\n');
    }
    out.push_str(parts.path);
    if !parts.query.is_empty() {
        let mut query = parts.query.clone();
        query.sort();
        out.push('?');
        let joined: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&joined.join("&"));
    }
    out
}

/// `base64(hmac_sha1(secret, string_to_sign))`.
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Uppercase hex MD5 of a body, as `Content-MD5` carries it.
pub fn content_md5(body: &[u8]) -> String {
    use md5::Digest as _;
    let digest = md5::Md5::digest(body);
    digest.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_vector_with_headers() {
        let parts = SignedParts {
            method: "GET",
            date: "Mon, 3 Jan 2010 08:33:47 GMT",
            headers: vec![
                ("x-log-apiversion", "0.6.0"),
                ("x-log-signaturemethod", "hmac-sha1"),
                ("x-log-bodyrawsize", "0"),
            ],
            path: "/logstores",
            ..Default::default()
        };
        let sts = string_to_sign(&parts);
        assert_eq!(
            sts,
            "GET\n\n\nMon, 3 Jan 2010 08:33:47 GMT\nx-log-apiversion:0.6.0\n\
             x-log-bodyrawsize:0\nx-log-signaturemethod:hmac-sha1\n/logstores"
        );
        assert_eq!(
            signature("mockAccessKeySecret", &sts),
            "Rwm6cTKzoti4HWoe+GKcb6Kv07E="
        );
    }

    #[test]
    fn design_vector_empty_key() {
        let parts = SignedParts {
            method: "GET",
            date: "Thu, 01 Jan 1970 00:00:00 GMT",
            headers: vec![
                ("x-log-apiversion", "0.6.0"),
                ("x-log-signaturemethod", "hmac-sha1"),
            ],
            path: "/",
            ..Default::default()
        };
        assert_eq!(
            signature("", &string_to_sign(&parts)),
            "SApFTtfTFKHmzdEdaMe5TjNn+RQ="
        );
    }

    #[test]
    fn date_and_meta_headers_are_not_signed_and_query_is_sorted() {
        let parts = SignedParts {
            method: "GET",
            date: "d",
            headers: vec![
                ("X-Log-Date", "d"),
                ("x-log-meta-a", "1"),
                ("X-ACS-Security-Token", "tok"),
                ("User-Agent", "x"),
            ],
            path: "/logstores/ls/shards/0",
            query: vec![("type", "log"), ("count", "10"), ("cursor", "MTA=")],
            ..Default::default()
        };
        assert_eq!(
            string_to_sign(&parts),
            "GET\n\n\nd\nx-acs-security-token:tok\n/logstores/ls/shards/0?count=10&cursor=MTA=&type=log"
        );
    }

    #[test]
    fn md5_is_uppercase_hex() {
        assert_eq!(content_md5(b""), "D41D8CD98F00B204E9800998ECF8427E");
        assert_eq!(content_md5(b"abc"), "900150983CD24FB0D6963F7D28E17F72");
    }
}
