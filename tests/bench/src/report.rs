//! The benchmark report: figures with their targets, rendered as the
//! Markdown of `docs/benchmarks.md` (machine, versions, the exact command,
//! one table, notes, and the hot-path profile kept in
//! `tests/bench/profile.md`).

use std::fmt::Write as _;

/// How a figure compares with its target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// No target.
    None,
    /// Higher is better; the figure should reach this.
    AtLeast(f64),
    /// Lower is better; the figure should stay under this.
    AtMost(f64),
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What was measured.
    pub what: String,
    /// The number.
    pub value: f64,
    /// Its unit, e.g. `records/s`.
    pub unit: String,
    /// The target.
    pub target: Target,
    /// How it was measured, or what it depends on.
    pub note: String,
}

impl Figure {
    /// A figure.
    #[must_use]
    pub fn new(
        what: &str,
        value: f64,
        unit: &str,
        target: Target,
        note: impl Into<String>,
    ) -> Self {
        Self {
            what: what.into(),
            value,
            unit: unit.into(),
            target,
            note: note.into(),
        }
    }

    /// `met` / `NOT met` with the ratio to the target, or empty.
    #[must_use]
    pub fn verdict(&self) -> String {
        match self.target {
            Target::None => String::new(),
            Target::AtLeast(t) => {
                let r = self.value / t;
                format!(
                    "≥ {} → {:.2}× {}",
                    number(t),
                    r,
                    if r >= 1.0 { "met" } else { "**NOT met**" }
                )
            }
            Target::AtMost(t) => {
                let r = self.value / t;
                format!(
                    "≤ {} → {:.2}× {}",
                    number(t),
                    r,
                    if r <= 1.0 { "met" } else { "**NOT met**" }
                )
            }
        }
    }
}

/// A number with a sensible precision.
#[must_use]
pub fn number(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        let s = format!("{v:.0}");
        // Thousands separators.
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(' ');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The machine line.
    pub machine: String,
    /// (component, version).
    pub versions: Vec<(String, String)>,
    /// The exact command that produced it.
    pub command: String,
    /// When it was produced (UTC).
    pub date: String,
    /// The data set.
    pub data: String,
    /// The rows.
    pub figures: Vec<Figure>,
    /// Scenarios that failed, with the error.
    pub failures: Vec<(String, String)>,
    /// Free notes (one paragraph each).
    pub notes: Vec<String>,
    /// Appended verbatim (the profile section).
    pub appendix: String,
}

impl Report {
    /// The Markdown.
    #[must_use]
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# kubesink benchmarks\n");
        let _ = writeln!(
            s,
            "Written by `just bench` (`tests/scripts/bench.sh`, harness in `tests/bench/`); do not edit by hand: the next run replaces everything above the profile section, which comes from `tests/bench/profile.md`.\n"
        );
        let _ = writeln!(s, "- **Date**: {}", self.date);
        let _ = writeln!(s, "- **Machine**: {}", self.machine);
        let versions: Vec<String> = self
            .versions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(s, "- **Versions**: {}", versions.join(", "));
        let _ = writeln!(s, "- **Command**: `{}`", self.command);
        let _ = writeln!(s, "- **Data**: {}\n", self.data);
        let _ = writeln!(s, "| what | figure | target | how |");
        let _ = writeln!(s, "| --- | ---: | --- | --- |");
        for f in &self.figures {
            let _ = writeln!(
                s,
                "| {} | {} {} | {} | {} |",
                f.what,
                number(f.value),
                f.unit,
                f.verdict(),
                f.note.replace('|', "\\|")
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(s, "\n## Scenarios that failed\n");
            for (name, err) in &self.failures {
                let _ = writeln!(s, "- **{name}**: `{}`", err.replace('`', "'"));
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(s, "{n}\n");
            }
        }
        if !self.appendix.is_empty() {
            let _ = writeln!(s, "\n{}", self.appendix.trim_end());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(1_234_567.0), "1 234 567");
        assert_eq!(number(950.0), "950.0");
        assert_eq!(number(0.5), "0.500");
        assert_eq!(number(-12_000.0), "-12 000");
    }

    #[test]
    fn verdicts_follow_the_direction_of_the_target() {
        let fast = Figure::new("x", 60_000.0, "records/s", Target::AtLeast(50_000.0), "");
        assert!(fast.verdict().ends_with(" met") && fast.verdict().contains("1.20×"));
        let slow = Figure::new("p99", 1.5, "s", Target::AtMost(1.0), "");
        assert!(slow.verdict().contains("NOT met"), "{}", slow.verdict());
        let none = Figure::new("y", 1.0, "", Target::None, "");
        assert_eq!(none.verdict(), "");
    }

    #[test]
    fn render_has_every_row_and_the_command() {
        let r = Report {
            command: "just bench".into(),
            figures: vec![Figure::new("a | b", 1.0, "u", Target::None, "n")],
            failures: vec![("sls".into(), "boom".into())],
            ..Report::default()
        };
        let md = r.render();
        assert!(md.contains("`just bench`"));
        assert!(md.contains("a | b"), "{md}");
        assert!(md.contains("**sls**: `boom`"));
    }
}
