//! Reading new rows of a table by its auto-increment `id` while several
//! writers commit at once: a row may become visible after rows with higher
//! ids, so a plain "`id >` the highest seen" cursor would skip it for good.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The lowest id not seen yet. Poll `WHERE id > cursor.low()`, then
/// [`seen`](Self::seen) the ids read. An id missing while higher ones have
/// been visible for [`IdCursor::GAP`] is given up as a gap (allocated,
/// never committed: a rolled-back insert, or an upsert of an existing
/// row).
#[derive(Debug, Default)]
pub struct IdCursor {
    low: i64,
    above: BTreeSet<i64>,
    gap_since: Option<Instant>,
}

impl IdCursor {
    /// How long a missing id may stay missing below visible ones.
    pub const GAP: Duration = Duration::from_secs(5);

    /// Starts after `id` (every row up to it is taken as seen).
    #[must_use]
    pub fn after(id: i64) -> Self {
        Self {
            low: id,
            ..Self::default()
        }
    }

    /// Every id at or below it was seen or given up.
    #[must_use]
    pub fn low(&self) -> i64 {
        self.low
    }

    /// Takes the ids of the rows a poll read.
    pub fn seen(&mut self, ids: impl IntoIterator<Item = i64>) {
        let low = self.low;
        self.above.extend(ids.into_iter().filter(|&id| id > low));
        while let Some(first) = self.above.first().copied() {
            if first == self.low + 1 {
                self.above.remove(&first);
                self.low = first;
                self.gap_since = None;
            } else if self.gap_since.is_some_and(|t| t.elapsed() > Self::GAP) {
                self.low = first - 1;
                self.gap_since = None;
            } else {
                self.gap_since.get_or_insert_with(Instant::now);
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_committed_late_is_read_and_the_cursor_moves_past_it() {
        let mut c = IdCursor::default();
        c.seen([1, 2, 4, 5]);
        assert_eq!(c.low(), 2, "3 may still commit");
        c.seen([3, 4, 5]);
        assert_eq!(c.low(), 5);
    }

    #[test]
    fn a_gap_is_given_up_only_after_the_grace() {
        let mut c = IdCursor::after(10);
        c.seen([12]);
        assert_eq!(c.low(), 10);
        c.gap_since = Some(Instant::now() - IdCursor::GAP - Duration::from_millis(1));
        c.seen([12, 13]);
        assert_eq!(c.low(), 13);
    }
}
