//! Host→guest call costs measured by the criterion bench
//! `benches/host_call.rs`, read back from criterion's
//! `target/criterion/<group>/<bench>/new/estimates.json` for the report.

use std::path::Path;

/// The criterion group the bench writes.
pub const GROUP: &str = "host_call";

/// Mean time of one iteration of `group/bench`, in nanoseconds, from the
/// last criterion run under `criterion_dir`.
#[must_use]
pub fn mean_ns(criterion_dir: &Path, group: &str, bench: &str) -> Option<f64> {
    let path = criterion_dir
        .join(group)
        .join(bench)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.pointer("/mean/point_estimate")?.as_f64()
}

/// The per-record cost from two means: `(batch - empty) / records`.
#[must_use]
pub fn per_record_ns(empty_ns: f64, batch_ns: f64, records: usize) -> f64 {
    (batch_ns - empty_ns) / records.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criterion_estimates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("g/b/new");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(
            d.join("estimates.json"),
            r#"{"mean":{"point_estimate":1234.5,"standard_error":1.0}}"#,
        )
        .expect("write");
        assert_eq!(mean_ns(dir.path(), "g", "b"), Some(1234.5));
        assert_eq!(mean_ns(dir.path(), "g", "missing"), None);
    }

    #[test]
    fn per_record_subtracts_the_empty_call() {
        assert!((per_record_ns(1000.0, 51_000.0, 100) - 500.0).abs() < 1e-9);
    }
}
