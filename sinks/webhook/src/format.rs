//! The receivers' formats: request bodies, signatures and how answers are
//! read. What each vendor documents, with links, is in the crate's README.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// A receiver's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Slack incoming webhook: `{"text": ...}`.
    Slack,
    /// DingTalk custom robot: `msgtype` `markdown`; signed URL.
    DingTalk,
    /// Feishu/Lark custom bot: `msg_type` `text`; signature in the body.
    Feishu,
    /// WeChat Work group robot: `msgtype` `markdown`.
    WeChat,
    /// Microsoft Teams (Workflows / incoming webhook): an Adaptive Card.
    Teams,
    /// Microsoft Teams legacy connector: a MessageCard.
    TeamsMessageCard,
    /// Generic: `{"records": [...]}` (each the record's JSON or the
    /// template's output).
    Json,
}

impl Format {
    /// Every format, with its setting value.
    pub const ALL: [(&'static str, Format); 7] = [
        ("slack", Format::Slack),
        ("dingtalk", Format::DingTalk),
        ("feishu", Format::Feishu),
        ("wechat", Format::WeChat),
        ("teams", Format::Teams),
        ("teams-messagecard", Format::TeamsMessageCard),
        ("json", Format::Json),
    ];

    /// Parses a `format` setting.
    pub fn parse(s: &str) -> Result<Format, String> {
        Format::ALL
            .iter()
            .find(|(n, _)| *n == s.trim())
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|(n, _)| *n).collect();
                format!("`{s}` is not one of {}", names.join(", "))
            })
    }

    /// Its setting value.
    pub fn name(self) -> &'static str {
        Format::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("json", |(n, _)| n)
    }

    /// Whether the format takes a signing `secret`.
    pub fn signs(self) -> bool {
        matches!(self, Format::DingTalk | Format::Feishu)
    }

    /// Most bytes of message text per request (the vendor's limit, with
    /// room for the JSON around it).
    pub fn max_text(self) -> usize {
        match self {
            // Slack truncates `text` past 40 000 characters; it advises
            // keeping messages to 4 000.
            Format::Slack => 4_000,
            // DingTalk: the message body at most 20 000 bytes.
            Format::DingTalk => 18_000,
            // Feishu: the request body at most 20 KB.
            Format::Feishu => 18_000,
            // WeChat Work: markdown content at most 4 096 bytes.
            Format::WeChat => 4_000,
            // Teams: a message at most 28 KB.
            Format::Teams | Format::TeamsMessageCard => 20_000,
            Format::Json => 1 << 20,
        }
    }

    /// Records per message by default.
    pub fn default_batch(self) -> usize {
        match self {
            Format::Json => 100,
            _ => 10,
        }
    }

    /// The rate limit by default (messages per period in seconds): the
    /// vendor's documented limit, `None` for generic JSON.
    pub fn default_rate(self) -> Option<(u32, u64)> {
        match self {
            // 20 messages per minute per robot (DingTalk, WeChat Work).
            Format::DingTalk | Format::WeChat => Some((20, 60)),
            // 100 per minute and 5 per second: 5 per 3 s keeps both.
            Format::Feishu => Some((5, 3)),
            // Slack: one message per second, short bursts tolerated; Teams
            // alike.
            Format::Slack | Format::Teams | Format::TeamsMessageCard => Some((10, 10)),
            Format::Json => None,
        }
    }
}

/// Message text for a chat format: the records' texts joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The title (`title` setting).
    pub title: String,
    /// One text per record (or one summary).
    pub lines: Vec<String>,
    /// DingTalk and WeChat Work: a `text` message instead of `markdown`.
    pub plain: bool,
}

/// HMAC-SHA256 of `msg` keyed by `key`, base64.
fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    B64.encode(mac.finalize().into_bytes())
}

/// DingTalk's `sign`: HMAC-SHA256 keyed by the secret over
/// `timestamp + "\n" + secret` (timestamp in milliseconds), base64 (the
/// caller URL-encodes it).
pub fn dingtalk_sign(timestamp_ms: u64, secret: &str) -> String {
    hmac_b64(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    )
}

/// Feishu/Lark's `sign`: HMAC-SHA256 keyed by `timestamp + "\n" + secret`
/// (timestamp in seconds) over an empty message, base64.
pub fn feishu_sign(timestamp_s: u64, secret: &str) -> String {
    hmac_b64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The body of a chat message. `signed` is `(timestamp in seconds,
/// signature)` for Feishu.
pub fn chat_body(format: Format, m: &Message, feishu_signed: Option<(u64, String)>) -> Value {
    let text = m.lines.join("\n");
    match format {
        Format::Slack => json!({ "text": format!("*{}*\n{text}", m.title) }),
        Format::DingTalk if m.plain => json!({
            "msgtype": "text",
            "text": { "content": format!("{}\n{text}", m.title) },
        }),
        Format::DingTalk => json!({
            "msgtype": "markdown",
            "markdown": {
                "title": m.title,
                "text": format!("#### {}\n\n{}", m.title, m.lines.join("\n\n")),
            },
        }),
        Format::Feishu => {
            let mut body = json!({
                "msg_type": "text",
                "content": { "text": format!("{}\n{text}", m.title) },
            });
            if let Some((ts, sign)) = feishu_signed {
                body["timestamp"] = Value::String(ts.to_string());
                body["sign"] = Value::String(sign);
            }
            body
        }
        Format::WeChat if m.plain => json!({
            "msgtype": "text",
            "text": { "content": format!("{}\n{text}", m.title) },
        }),
        Format::WeChat => json!({
            "msgtype": "markdown",
            "markdown": { "content": format!("**{}**\n{text}", m.title) },
        }),
        Format::Teams => {
            let mut blocks = vec![json!({
                "type": "TextBlock", "text": m.title, "weight": "Bolder", "size": "Medium", "wrap": true,
            })];
            blocks.extend(
                m.lines
                    .iter()
                    .map(|l| json!({ "type": "TextBlock", "text": l, "wrap": true })),
            );
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": blocks,
                    },
                }],
            })
        }
        Format::TeamsMessageCard => json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": m.title,
            "title": m.title,
            "text": m.lines.join("\n\n"),
        }),
        Format::Json => json!({ "title": m.title, "text": text }),
    }
}

/// What a receiver's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered.
    Ok,
    /// Try again, not before `after_ms` when the receiver said so.
    Retry {
        /// Why (status, vendor code, start of the answer).
        why: String,
        /// Milliseconds to wait, from `Retry-After` or the vendor's rule.
        after_ms: Option<u64>,
    },
    /// Will not succeed as it is.
    Reject(String),
}

/// The start of a body for a message, escaped (it comes from outside).
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().nth(200).is_some() {
        s.push('…');
    }
    s.escape_debug().to_string()
}

/// Seconds of a `Retry-After` value: delta-seconds or an HTTP-date
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), relative to `now_ms`.
pub fn retry_after_ms(value: &str, now_ms: u64) -> Option<u64> {
    let v = value.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(s.saturating_mul(1000));
    }
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| x == month)? as i64 + 1;
    let d: i64 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time.split(':').filter_map(|x| x.parse().ok()).collect();
    let [h, mi, s] = hms.as_slice() else {
        return None;
    };
    // days_from_civil (H. Hinnant).
    let (yy, mm) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let at_ms = (days * 86_400 + h * 3600 + mi * 60 + s) * 1000;
    Some(u64::try_from(at_ms).ok()?.saturating_sub(now_ms))
}

/// Vendor error codes that mean "sending too fast": retried after a minute.
fn rate_limited_code(format: Format, code: i64) -> bool {
    match format {
        // 130101: "send too fast, exceed 20 times per minute".
        Format::DingTalk => code == 130_101,
        // 45009: API frequency out of limit.
        Format::WeChat => code == 45_009,
        // 9499 / 11232: frequency limited.
        Format::Feishu => matches!(code, 9_499 | 11_232),
        _ => false,
    }
}

/// Reads a receiver's answer: 2xx (and, for the vendors that answer
/// errors with 200, a zero code) is delivered; 408, 429 and 5xx are
/// retried (honouring `Retry-After`); anything else is rejected.
pub fn verdict(
    format: Format,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now_ms: u64,
) -> Verdict {
    let after_ms = retry_after.and_then(|v| retry_after_ms(v, now_ms));
    if matches!(status, 408 | 429 | 500..=599) {
        return Verdict::Retry {
            why: format!("HTTP {status}: {}", snippet(body)),
            after_ms,
        };
    }
    if !(200..300).contains(&status) {
        return Verdict::Reject(format!("HTTP {status}: {}", snippet(body)));
    }
    let code_field: &[&str] = match format {
        Format::DingTalk | Format::WeChat => &["errcode"],
        Format::Feishu => &["code", "StatusCode"],
        _ => return Verdict::Ok,
    };
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return Verdict::Reject(format!(
            "HTTP {status} but the answer is not the vendor's JSON: {}",
            snippet(body)
        ));
    };
    let code = code_field.iter().find_map(|f| answer.get(*f)?.as_i64());
    match code {
        Some(0) => Verdict::Ok,
        Some(c) if rate_limited_code(format, c) => Verdict::Retry {
            why: format!(
                "{} code {c} (rate limited): {}",
                format.name(),
                snippet(body)
            ),
            after_ms: Some(after_ms.unwrap_or(60_000)),
        },
        Some(c) => Verdict::Reject(format!("{} code {c}: {}", format.name(), snippet(body))),
        None => Verdict::Reject(format!(
            "HTTP {status} without the vendor's `{}`: {}",
            code_field[0],
            snippet(body)
        )),
    }
}

#[cfg(test)]
mod tests;
