//! SLS request signature v1 (HMAC-SHA1), `Content-MD5`, and the date formats
//! the sink needs (RFC 1123 for `Date`, RFC 3339 for event times).
//!
//! The string to sign is `METHOD\nCONTENT-MD5\nCONTENT-TYPE\nDATE\n`, then the
//! sorted lowercase `x-log-*`/`x-acs-*` headers as `k:v\n` (`x-log-date` and
//! `x-log-meta-*` excluded), then the path (and `?` sorted `k=v&..`, raw
//! values). The official `aliyun-log-sdk-sign` crate does the same but
//! always reads the clock, so it cannot be tested with fixed vectors.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::Digest as _;
use sha1::Sha1;

/// A request to sign.
#[derive(Debug, Clone, Default)]
pub struct ToSign<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// `Content-MD5` value or "".
    pub content_md5: &'a str,
    /// `Content-Type` value or "".
    pub content_type: &'a str,
    /// `Date` value.
    pub date: &'a str,
    /// Headers (lowercase names); only `x-log-*`/`x-acs-*` are signed.
    pub headers: &'a [(String, String)],
    /// Path, e.g. `/logstores/events/shards/lb`.
    pub path: &'a str,
    /// Query parameters (raw values).
    pub query: &'a [(String, String)],
}

/// The v1 string to sign.
pub fn string_to_sign(r: &ToSign<'_>) -> String {
    let mut out = format!(
        "{}\n{}\n{}\n{}\n",
        r.method, r.content_md5, r.content_type, r.date
    );
    let mut signed: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .filter(|(k, _)| {
            (k.starts_with("x-log-") || k.starts_with("x-acs-"))
                && *k != "x-log-date"
                && !k.starts_with("x-log-meta-")
        })
        .collect();
    signed.sort_unstable();
    for (k, v) in signed {
        out.push_str(k);
        out.push(':');
        out.push_str(v);
        out.push('\n');
    }
    out.push_str(r.path);
    if !r.query.is_empty() {
        let mut q: Vec<_> = r.query.iter().collect();
        q.sort();
        out.push('?');
        for (i, (k, v)) in q.into_iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// `base64(hmac_sha1(secret, string_to_sign))`.
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    let mut mac = match <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of every length.
        Err(_) => unreachable!("HMAC-SHA1 takes any key length"),
    };
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `Authorization` header value: `LOG <id>:<signature>`.
pub fn authorization(key_id: &str, secret: &str, r: &ToSign<'_>) -> String {
    format!("LOG {key_id}:{}", signature(secret, &string_to_sign(r)))
}

/// Uppercase hex MD5, as `Content-MD5` carries it.
pub fn content_md5(body: &[u8]) -> String {
    hex_upper(&md5::Md5::digest(body).into())
}

/// Uppercase hex of an MD5 digest.
pub fn hex_upper(digest: &[u8; 16]) -> String {
    let mut s = String::with_capacity(32);
    for &b in digest {
        s.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
    }
    s
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `Thu, 01 Jan 1970 00:00:00 GMT` for Unix seconds.
pub fn rfc1123(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// RFC 3339 in UTC with a `Z`, seconds precision (Go's `time.RFC3339`, as
/// KubeDL writes event times): `2024-05-01T10:00:00Z`. Two per event log,
/// so the digits are written directly rather than through `format!`
/// (whose machinery is a visible share of the sink's CPU in wasm).
pub fn rfc3339(secs: i64) -> String {
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let Some(year) = u32::try_from(y).ok().filter(|y| *y <= 9999) else {
        return format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
    };
    // In range by construction: 0..86_400 seconds in a day.
    let rem = u32::try_from(rem).unwrap_or(0);
    let mut out = String::with_capacity(20);
    push_digits(&mut out, year, 4);
    out.push('-');
    push_digits(&mut out, m, 2);
    out.push('-');
    push_digits(&mut out, d, 2);
    out.push('T');
    push_digits(&mut out, rem / 3600, 2);
    out.push(':');
    push_digits(&mut out, rem % 3600 / 60, 2);
    out.push(':');
    push_digits(&mut out, rem % 60, 2);
    out.push('Z');
    out
}

/// The last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, n: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = n / 10u32.pow(place) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn design_vector_with_headers() {
        let headers = h(&[
            ("x-log-apiversion", "0.6.0"),
            ("x-log-signaturemethod", "hmac-sha1"),
            ("x-log-bodyrawsize", "0"),
        ]);
        let r = ToSign {
            method: "GET",
            date: "Mon, 3 Jan 2010 08:33:47 GMT",
            headers: &headers,
            path: "/logstores",
            ..Default::default()
        };
        assert_eq!(
            signature("mockAccessKeySecret", &string_to_sign(&r)),
            "Rwm6cTKzoti4HWoe+GKcb6Kv07E="
        );
        assert_eq!(
            authorization("id", "mockAccessKeySecret", &r),
            "LOG id:Rwm6cTKzoti4HWoe+GKcb6Kv07E="
        );
    }

    #[test]
    fn design_vector_empty_key() {
        let headers = h(&[
            ("x-log-apiversion", "0.6.0"),
            ("x-log-signaturemethod", "hmac-sha1"),
        ]);
        let r = ToSign {
            method: "GET",
            date: &rfc1123(0),
            headers: &headers,
            path: "/",
            ..Default::default()
        };
        assert_eq!(r.date, "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            signature("", &string_to_sign(&r)),
            "SApFTtfTFKHmzdEdaMe5TjNn+RQ="
        );
    }

    #[test]
    fn unsigned_headers_and_sorted_query() {
        let headers = h(&[
            ("x-log-date", "d"),
            ("x-acs-security-token", "t"),
            ("content-length", "3"),
        ]);
        let query = h(&[("key", "ab"), ("a", "1")]);
        let r = ToSign {
            method: "POST",
            content_md5: "M",
            content_type: "application/x-protobuf",
            date: "d",
            headers: &headers,
            path: "/logstores/ls/shards/route",
            query: &query,
        };
        assert_eq!(
            string_to_sign(&r),
            "POST\nM\napplication/x-protobuf\nd\nx-acs-security-token:t\n/logstores/ls/shards/route?a=1&key=ab"
        );
    }

    #[test]
    fn md5_and_dates() {
        assert_eq!(content_md5(b"abc"), "900150983CD24FB0D6963F7D28E17F72");
        assert_eq!(rfc1123(1_262_507_627), "Sun, 03 Jan 2010 08:33:47 GMT");
        assert_eq!(rfc1123(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(rfc3339(1_714_557_600), "2024-05-01T10:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        // Outside four-digit years, as `format!` pads them.
        assert_eq!(rfc3339(253_402_300_800), "10000-01-01T00:00:00Z");
        assert_eq!(rfc3339(-62_167_219_201), "-001-12-31T23:59:59Z");
        // The digits written directly are what `format!` writes, across
        // the four-digit years (a stride that is not a divisor of a day).
        for secs in (-62_167_219_200_i64..=253_402_300_799).step_by(7_919_993) {
            let (y, m, d) = civil(secs.div_euclid(86_400));
            let rem = secs.rem_euclid(86_400);
            let expected = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            );
            assert_eq!(rfc3339(secs), expected, "{secs}");
        }
    }
}
