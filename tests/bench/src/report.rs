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
    /// The report this run updates ([`Report::update`]), if any.
    pub previous: Option<Previous>,
}

/// An earlier report whose rows a partial run keeps.
#[derive(Debug, Clone, Default)]
pub struct Previous {
    /// Its header list (`- **Date**: …` and the other `- **` lines).
    pub header: Vec<String>,
    /// Its table rows: (the `what` cell, the whole line).
    pub rows: Vec<(String, String)>,
}

impl Previous {
    /// Reads the header and the rows of a report's Markdown; `None` when it
    /// has no table.
    #[must_use]
    pub fn parse(markdown: &str) -> Option<Previous> {
        let mut prev = Previous::default();
        let mut lines = markdown.lines();
        for line in lines.by_ref() {
            if line.starts_with("- **") {
                prev.header.push(line.to_owned());
            } else if line.starts_with("| what | figure |") {
                break;
            }
        }
        lines.next()?; // the separator
        for line in lines {
            let Some(cells) = line.strip_prefix("| ") else {
                break;
            };
            let what = cells.split(" | ").next().unwrap_or_default();
            prev.rows.push((what.to_owned(), line.to_owned()));
        }
        (!prev.rows.is_empty()).then_some(prev)
    }
}

impl Report {
    /// Makes this (partial) run an update of `previous`: its header stays,
    /// a line says what this run re-measured, its rows keep their places
    /// (the re-measured ones replaced and marked with this run's date) and
    /// rows new to the table go last.
    pub fn update(&mut self, previous: Previous) {
        self.previous = Some(previous);
    }

    fn row(&self, f: &Figure) -> String {
        let mark = match self.previous {
            Some(_) => format!(" *(updated {})*", self.date),
            None => String::new(),
        };
        format!(
            "| {} | {} {} | {} | {}{mark} |",
            f.what,
            number(f.value),
            f.unit,
            f.verdict(),
            f.note.replace('|', "\\|")
        )
    }

    /// The Markdown.
    #[must_use]
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# kubesink benchmarks\n");
        let _ = writeln!(
            s,
            "Written by `just bench` (`tests/scripts/bench.sh`, harness in `tests/bench/`); do not edit by hand: a run of every scenario replaces everything above the profile section (which comes from `tests/bench/profile.md`); a run of some (`BENCH_ONLY`) replaces their rows and keeps the others.\n"
        );
        let versions: Vec<String> = self
            .versions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        match &self.previous {
            None => {
                let _ = writeln!(s, "- **Date**: {}", self.date);
                let _ = writeln!(s, "- **Machine**: {}", self.machine);
                let _ = writeln!(s, "- **Versions**: {}", versions.join(", "));
                let _ = writeln!(s, "- **Command**: `{}`", self.command);
                let _ = writeln!(s, "- **Data**: {}\n", self.data);
            }
            Some(prev) => {
                // An earlier update's line goes once none of its rows is
                // left: this run re-measured them all.
                let kept: Vec<&str> = prev
                    .rows
                    .iter()
                    .filter(|(what, _)| !self.figures.iter().any(|f| &f.what == what))
                    .map(|(_, line)| line.as_str())
                    .collect();
                for line in &prev.header {
                    let stale = line
                        .strip_prefix("- **Updated ")
                        .and_then(|rest| rest.split_once("**"))
                        .is_some_and(|(date, _)| {
                            let mark = format!("*(updated {date})*");
                            !kept.iter().any(|row| row.contains(&mark))
                        });
                    if !stale {
                        let _ = writeln!(s, "{line}");
                    }
                }
                let _ = writeln!(
                    s,
                    "- **Updated {}**: `{}` re-measured the rows marked *(updated {})*; the others are from the runs above. Machine: {}; versions: {}; data: {}\n",
                    self.date,
                    self.command,
                    self.date,
                    self.machine,
                    versions.join(", "),
                    self.data
                );
            }
        }
        let _ = writeln!(s, "| what | figure | target | how |");
        let _ = writeln!(s, "| --- | ---: | --- | --- |");
        let mut placed = vec![false; self.figures.len()];
        if let Some(prev) = &self.previous {
            for (what, line) in &prev.rows {
                match self.figures.iter().position(|f| &f.what == what) {
                    Some(i) => {
                        placed[i] = true;
                        let _ = writeln!(s, "{}", self.row(&self.figures[i]));
                    }
                    None => {
                        let _ = writeln!(s, "{line}");
                    }
                }
            }
        }
        for (f, _) in self.figures.iter().zip(&placed).filter(|(_, p)| !**p) {
            let _ = writeln!(s, "{}", self.row(f));
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

    #[test]
    fn an_update_keeps_the_rows_it_did_not_measure_in_place() {
        let first = Report {
            date: "D1".into(),
            command: "just bench".into(),
            figures: vec![
                Figure::new("a", 1.0, "u", Target::None, "first a"),
                Figure::new("b", 2.0, "u", Target::None, "first b"),
            ],
            ..Report::default()
        }
        .render();
        let mut second = Report {
            date: "D2".into(),
            command: "BENCH_ONLY=x just bench".into(),
            figures: vec![
                Figure::new("b", 3.0, "u", Target::None, "second b"),
                Figure::new("c", 4.0, "u", Target::None, "new c"),
            ],
            ..Report::default()
        };
        second.update(Previous::parse(&first).expect("a table"));
        let md = second.render();
        let rows: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| ---"))
            .collect();
        assert_eq!(rows.len(), 4, "the header and 3 rows: {md}");
        assert!(
            rows[1].contains("first a") && !rows[1].contains("updated"),
            "{md}"
        );
        assert!(rows[2].contains("second b *(updated D2)*"), "{md}");
        assert!(rows[3].contains("new c *(updated D2)*"), "{md}");
        assert!(md.contains("- **Date**: D1"), "{md}");
        assert!(
            md.contains("- **Updated D2**: `BENCH_ONLY=x just bench`"),
            "{md}"
        );
        // And again: the kept header and marks survive a second update.
        let mut third = Report {
            date: "D3".into(),
            figures: vec![Figure::new("a", 5.0, "u", Target::None, "third a")],
            ..Report::default()
        };
        third.update(Previous::parse(&md).expect("a table"));
        let md3 = third.render();
        assert!(md3.contains("second b *(updated D2)*") && md3.contains("- **Updated D2**"));
        assert!(md3.contains("third a *(updated D3)*"), "{md3}");
        // An update's line goes with the last of its rows.
        let mut fourth = Report {
            date: "D4".into(),
            figures: vec![
                Figure::new("b", 6.0, "u", Target::None, "fourth b"),
                Figure::new("c", 7.0, "u", Target::None, "fourth c"),
            ],
            ..Report::default()
        };
        fourth.update(Previous::parse(&md3).expect("a table"));
        let md4 = fourth.render();
        assert!(!md4.contains("- **Updated D2**"), "{md4}");
        assert!(
            md4.contains("- **Updated D3**") && md4.contains("- **Updated D4**"),
            "{md4}"
        );
        assert!(md4.contains("- **Date**: D1"), "{md4}");
    }
}
