//! Timestamps: from Kubernetes' `Time`/`MicroTime` (RFC 3339, with or
//! without fractional seconds, `Z` or an offset) to the record
//! [`Timestamp`], and ordering helpers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff;

use crate::record::Timestamp;

/// Converts a jiff timestamp (what k8s-openapi parses into) to a record
/// timestamp: whole seconds (floored) and non-negative nanoseconds.
pub fn from_jiff(t: jiff::Timestamp) -> Timestamp {
    let n = t.as_nanosecond();
    let seconds = n.div_euclid(1_000_000_000);
    let nanos = n.rem_euclid(1_000_000_000);
    Timestamp {
        // jiff's range (years -9999..=9999) fits an i64 of seconds.
        seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
        nanos: u32::try_from(nanos).unwrap_or(0),
    }
}

/// A `metav1.Time` as a record timestamp.
pub fn from_time(t: &Time) -> Timestamp {
    from_jiff(t.0)
}

/// A `metav1.MicroTime` as a record timestamp.
pub fn from_micro(t: &MicroTime) -> Timestamp {
    from_jiff(t.0)
}

/// Parses an RFC 3339 text as Kubernetes writes it.
pub fn parse(text: &str) -> Option<Timestamp> {
    text.parse::<jiff::Timestamp>().ok().map(from_jiff)
}

/// The Unix epoch, used when an object carries no creation time.
pub fn epoch() -> Timestamp {
    Timestamp {
        seconds: 0,
        nanos: 0,
    }
}

/// Sort key of a timestamp.
pub fn key(t: &Timestamp) -> (i64, u32) {
    (t.seconds, t.nanos)
}

/// The later of the given timestamps, if any.
pub fn latest(times: impl IntoIterator<Item = Timestamp>) -> Option<Timestamp> {
    times.into_iter().max_by_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_with_and_without_fraction() {
        let t = parse("2024-05-01T10:00:00Z").expect("plain");
        assert_eq!(t.seconds, 1_714_557_600);
        assert_eq!(t.nanos, 0);
        let t = parse("2024-05-01T10:00:00.123456Z").expect("micro");
        assert_eq!(t.seconds, 1_714_557_600);
        assert_eq!(t.nanos, 123_456_000);
        let t = parse("2024-05-01T18:00:00.5+08:00").expect("offset");
        assert_eq!(t.seconds, 1_714_557_600);
        assert_eq!(t.nanos, 500_000_000);
    }

    #[test]
    fn rejects_non_rfc3339() {
        assert!(parse("yesterday").is_none());
        assert!(parse("2024-05-01").is_none());
        assert!(parse("").is_none());
    }

    #[test]
    fn before_the_epoch_has_positive_nanos() {
        let t = parse("1969-12-31T23:59:59.25Z").expect("pre-epoch");
        assert_eq!(t.seconds, -1);
        assert_eq!(t.nanos, 250_000_000);
    }

    #[test]
    fn micro_time_from_json() {
        let m: MicroTime = serde_json::from_value(serde_json::json!("2024-05-01T10:00:00.000001Z"))
            .expect("MicroTime");
        assert_eq!(from_micro(&m).nanos, 1_000);
        let t: Time =
            serde_json::from_value(serde_json::json!("2024-05-01T10:00:00Z")).expect("Time");
        assert_eq!(from_time(&t).seconds, 1_714_557_600);
    }

    #[test]
    fn latest_picks_the_max() {
        let a = Timestamp {
            seconds: 5,
            nanos: 9,
        };
        let b = Timestamp {
            seconds: 6,
            nanos: 0,
        };
        let c = Timestamp {
            seconds: 6,
            nanos: 1,
        };
        assert_eq!(latest([a, c, b]), Some(c));
        assert_eq!(latest([]), None);
    }
}
