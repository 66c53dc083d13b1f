//! The history as a table (for people), JSON or YAML (for scripts).

use chrono::{DateTime, TimeDelta, Utc};
use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

use super::{EventGroup, HistoryError, JobDetail, JobRow};

/// How the history is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables; a job as `kubectl describe` lays it out.
    #[default]
    Table,
    /// JSON: timestamps RFC 3339, durations in seconds.
    Json,
    /// YAML, with the same fields as JSON.
    Yaml,
}

impl OutputFormat {
    fn data<T: Serialize>(self, value: &T) -> Result<Option<String>, HistoryError> {
        let text = match self {
            OutputFormat::Table => return Ok(None),
            OutputFormat::Json => serde_json::to_string_pretty(value)
                .map(|s| s + "\n")
                .map_err(|e| HistoryError::Render(e.to_string()))?,
            OutputFormat::Yaml => {
                serde_yaml::to_string(value).map_err(|e| HistoryError::Render(e.to_string()))?
            }
        };
        Ok(Some(text))
    }
}

/// Jobs, one line each; `now` is the reference for running jobs.
pub fn jobs(
    rows: &[JobRow],
    format: OutputFormat,
    now: DateTime<Utc>,
) -> Result<String, HistoryError> {
    if let Some(text) = format.data(&rows)? {
        return Ok(text);
    }
    if rows.is_empty() {
        return Ok("No jobs found.\n".into());
    }
    let mut t = table([
        "NAMESPACE",
        "NAME",
        "KIND",
        "STATUS",
        "CREATED",
        "DURATION",
        "IN CLUSTER",
    ]);
    for j in rows {
        t.add_row([
            j.namespace.clone(),
            j.name.clone(),
            j.kind.clone(),
            j.status.clone(),
            time(j.created),
            duration(j, now),
            yes_no(j.in_cluster).into(),
        ]);
    }
    Ok(format!("{t}\n"))
}

/// One job with its pods and events, as `kubectl describe` lays it out.
/// An event's age is counted to `now`: `3m (x5 over 3h)` means last seen
/// 3 minutes ago, 5 times since 3 hours ago.
pub fn job(
    detail: &JobDetail,
    format: OutputFormat,
    now: DateTime<Utc>,
) -> Result<String, HistoryError> {
    if let Some(text) = format.data(detail)? {
        return Ok(text);
    }
    let j = &detail.job;
    let mut out = String::new();
    let fields = [
        ("Name", j.name.clone()),
        ("Namespace", j.namespace.clone()),
        ("Kind", j.kind.clone()),
        ("UID", j.uid.clone()),
        ("Status", j.status.clone()),
        ("Owner", j.owner.clone().unwrap_or_default()),
        ("Created", time(j.created)),
        ("Running", time(j.running)),
        ("Finished", time(j.finished)),
        ("Duration", duration(j, now)),
        ("In cluster", yes_no(j.in_cluster).into()),
        ("Remark", j.remark.clone().unwrap_or_default()),
    ];
    for (k, v) in fields {
        out.push_str(&format!("{:<12}{}\n", format!("{k}:"), flat(&v)));
    }
    out.push_str("\nPods:\n");
    if detail.pods.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut t = table([
            "NAME", "REPLICA", "STATUS", "NODE", "STARTED", "FINISHED", "REMARK",
        ]);
        for p in &detail.pods {
            t.add_row([
                p.name.clone(),
                p.replica_type.clone(),
                p.status.clone(),
                p.node.clone().unwrap_or_default(),
                time(p.started),
                time(p.finished),
                flat(p.remark.as_deref().unwrap_or_default()),
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    out.push_str("\nEvents:\n");
    if detail.events.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut t = table(["TYPE", "REASON", "AGE", "FROM", "OBJECT", "MESSAGE"]);
        for e in &detail.events {
            t.add_row([
                e.event_type.clone(),
                e.reason.clone(),
                age(e, now),
                e.source.clone(),
                e.object.clone(),
                flat(&e.message),
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    Ok(out)
}

/// `kubectl describe`'s event age: since the last time, and with a count
/// above one `(xN over <since the first time>)`.
fn age(e: &EventGroup, now: DateTime<Utc>) -> String {
    let since = |t: Option<DateTime<Utc>>| {
        t.map_or_else(|| "<unknown>".into(), |t| human_duration(now - t))
    };
    let last = since(e.last_seen.or(e.first_seen));
    if e.count > 1 {
        format!("{last} (x{} over {})", e.count, since(e.first_seen))
    } else {
        last
    }
}

fn duration(j: &JobRow, now: DateTime<Utc>) -> String {
    match (j.duration_seconds, j.running.or(j.created)) {
        (Some(s), _) => human_duration(TimeDelta::seconds(s)),
        (None, Some(start)) if j.in_cluster => format!("{} so far", human_duration(now - start)),
        _ => "-".into(),
    }
}

fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    t
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// One line: newlines shown as `⏎`, control characters dropped.
fn flat(v: &str) -> String {
    v.replace('\n', " ⏎ ")
        .chars()
        .filter(|c| !c.is_control())
        .collect()
}

/// A duration as Kubernetes prints ages (apimachinery's `HumanDuration`):
/// `45s`, `5m30s`, `3h`, `2d4h`, `1y20d`.
pub(crate) fn human_duration(d: TimeDelta) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        let days = hours / 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        let years = hours / 24 / 365;
        return if days == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{days}d")
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_kubectl_prints_ages() {
        let s = TimeDelta::seconds;
        for (secs, want) in [
            (-5, "<invalid>"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 1800, "3h30m"),
            (30 * 3600, "30h"),
            (52 * 3600, "2d4h"),
            (30 * 86400, "30d"),
            (800 * 86400, "2y70d"),
            (3000 * 86400, "8y"),
        ] {
            assert_eq!(human_duration(s(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn repeated_events_say_how_often_since_when() {
        let now = DateTime::parse_from_rfc3339("2026-03-02T12:00:00Z")
            .unwrap()
            .to_utc();
        let mut e = EventGroup {
            object: "Pod/p".into(),
            event_type: "Warning".into(),
            reason: "BackOff".into(),
            source: "kubelet".into(),
            message: "Back-off".into(),
            count: 5,
            first_seen: Some(now - TimeDelta::hours(3)),
            last_seen: Some(now - TimeDelta::minutes(3)),
        };
        assert_eq!(age(&e, now), "3m (x5 over 3h)");
        e.count = 1;
        assert_eq!(age(&e, now), "3m");
    }
}
