//! The per-sink host memory budget (`limits.host_memory`).
//!
//! Host memory a sink causes outside its own linear memory — SQL result
//! rows read for it, HTTP bodies buffered for it, its wasm tables — is
//! reserved from one [`HostBudget`] per sink, shared by the sink's rebuilt
//! stores and by all of its workers' instances. A reservation that would go
//! past the limit fails with [`BudgetExceeded`] (naming the sink, what was
//! asked, what is in use and the limit); the capability turns that into an
//! error of that one call (`too-large`, or a fault), never a failure of the
//! process.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Default of `Limits::host_memory_bytes` (`limits.host_memory`): 64 MiB.
pub const DEFAULT_HOST_MEMORY_BYTES: usize = 64 << 20;

struct Inner {
    sink: String,
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
}

/// One sink's host memory budget: a limit and an atomic count of the bytes
/// reserved against it. Cheap to clone (clones share the count).
#[derive(Clone)]
pub struct HostBudget {
    inner: Arc<Inner>,
}

impl fmt::Debug for HostBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostBudget")
            .field("sink", &self.inner.sink)
            .field("limit", &self.inner.limit)
            .field("used", &self.used())
            .field("peak", &self.peak())
            .finish()
    }
}

/// A reservation would take a sink past its host memory budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "sink '{sink}': host memory budget exceeded by {what}: asked for {asked} bytes with {used} of {limit} bytes in use (limits.host_memory)"
)]
pub(crate) struct BudgetExceeded {
    /// The sink.
    pub sink: String,
    /// What asked, e.g. `host memory`, `sql result`, `http response body`.
    pub what: &'static str,
    /// Bytes asked for.
    pub asked: usize,
    /// Bytes in use when asked (by this sink, all reservations together).
    pub used: usize,
    /// The limit.
    pub limit: usize,
}

impl HostBudget {
    /// A budget of `limit` bytes for sink `sink`.
    pub fn new(sink: &str, limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                sink: sink.to_owned(),
                limit,
                used: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
            }),
        }
    }

    /// A budget that never refuses (for unit tests).
    #[cfg(test)]
    pub(crate) fn unlimited(sink: &str) -> Self {
        Self::new(sink, usize::MAX)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Most bytes reserved at once so far.
    pub fn peak(&self) -> usize {
        self.inner.peak.load(Ordering::Relaxed)
    }

    /// True when two handles share one count (the same sink's budget).
    #[cfg(test)]
    pub(crate) fn same(&self, other: &HostBudget) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Reserves `bytes`, released when the [`Reservation`] is dropped.
    #[cfg(test)]
    pub(crate) fn try_reserve(&self, bytes: usize) -> Result<Reservation, BudgetExceeded> {
        self.try_reserve_for("host memory", bytes)
    }

    /// [`try_reserve`](Self::try_reserve), naming what asks in the error
    /// (e.g. `"sql result"`).
    pub(crate) fn try_reserve_for(
        &self,
        what: &'static str,
        bytes: usize,
    ) -> Result<Reservation, BudgetExceeded> {
        self.take(what, bytes)?;
        Ok(Reservation {
            budget: self.clone(),
            what,
            bytes,
        })
    }

    /// Adds `bytes` to the count if the result stays within the limit.
    fn take(&self, what: &'static str, bytes: usize) -> Result<(), BudgetExceeded> {
        if bytes == 0 {
            return Ok(());
        }
        let inner = &self.inner;
        let result = inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= inner.limit)
            });
        match result {
            Ok(before) => {
                inner.peak.fetch_max(before + bytes, Ordering::Relaxed);
                Ok(())
            }
            Err(used) => Err(BudgetExceeded {
                sink: inner.sink.clone(),
                what,
                asked: bytes,
                used,
                limit: inner.limit,
            }),
        }
    }

    fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            self.inner.used.fetch_sub(bytes, Ordering::AcqRel);
        }
    }
}

/// Bytes reserved from a [`HostBudget`]; given back when dropped.
#[must_use = "a reservation is released as soon as it is dropped"]
pub(crate) struct Reservation {
    budget: HostBudget,
    what: &'static str,
    bytes: usize,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("sink", &self.budget.inner.sink)
            .field("what", &self.what)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Reservation {
    /// Bytes held by this reservation.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Reserves `bytes` more; on failure the reservation is unchanged.
    pub fn grow(&mut self, bytes: usize) -> Result<(), BudgetExceeded> {
        self.budget.take(self.what, bytes)?;
        self.bytes += bytes;
        Ok(())
    }

    /// Grows or shrinks the reservation to exactly `bytes`.
    #[cfg(test)]
    pub(crate) fn resize(&mut self, bytes: usize) -> Result<(), BudgetExceeded> {
        if bytes >= self.bytes {
            self.grow(bytes - self.bytes)
        } else {
            self.shrink(self.bytes - bytes);
            Ok(())
        }
    }

    /// Gives back `bytes` (at most what is held) before the drop.
    pub(crate) fn shrink(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        self.budget.give_back(bytes);
        self.bytes -= bytes;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_grows_within_the_limit_and_is_given_back() {
        let budget = HostBudget::new("mysql", 1024);
        let mut rows = budget.try_reserve(600).expect("fits");
        assert!(budget.try_reserve(600).is_err(), "1200 > 1024");
        rows.grow(100).expect("fits");
        assert_eq!(budget.used(), 700);
        drop(rows);
        assert_eq!(budget.used(), 0);
        assert_eq!(budget.peak(), 700);
    }

    #[test]
    fn reservations_count_until_dropped() {
        let b = HostBudget::new("s", 100);
        let r1 = b.try_reserve(60).expect("fits");
        let r2 = b.try_reserve(40).expect("fits exactly");
        assert_eq!(b.used(), 100);
        let err = b.try_reserve(1).expect_err("over");
        assert_eq!(
            err,
            BudgetExceeded {
                sink: "s".into(),
                what: "host memory",
                asked: 1,
                used: 100,
                limit: 100
            }
        );
        drop(r1);
        assert_eq!(b.used(), 40);
        drop(r2);
        assert_eq!(b.used(), 0);
        assert_eq!(b.peak(), 100);
    }

    #[test]
    fn the_error_names_sink_what_asked_used_and_limit() {
        let b = HostBudget::new("kubedl-mysql", 1000);
        let _held = b.try_reserve(700).expect("fits");
        let err = b.try_reserve_for("sql result", 400).expect_err("over");
        let msg = err.to_string();
        for part in [
            "sink 'kubedl-mysql'",
            "sql result",
            "400 bytes",
            "700 of 1000 bytes",
            "limits.host_memory",
        ] {
            assert!(msg.contains(part), "{part} missing from: {msg}");
        }
    }

    #[test]
    fn grow_and_shrink_keep_the_count() {
        let b = HostBudget::new("s", 100);
        let mut r = b.try_reserve(10).expect("fits");
        r.grow(50).expect("fits");
        assert_eq!((r.bytes(), b.used()), (60, 60));
        let other = b.try_reserve(30).expect("fits");
        let err = r.grow(20).expect_err("90 + 20 > 100");
        assert_eq!((err.asked, err.used), (20, 90));
        assert_eq!(r.bytes(), 60, "a refused grow changes nothing");
        r.shrink(1000);
        assert_eq!((r.bytes(), b.used()), (0, 30));
        r.resize(70).expect("fits");
        assert_eq!(b.used(), 100);
        r.resize(5).expect("shrinks");
        assert_eq!(b.used(), 35);
        drop(other);
        drop(r);
        assert_eq!(b.used(), 0);
        assert_eq!(b.peak(), 100);
    }

    #[test]
    fn clones_share_one_count_and_zero_is_free() {
        let a = HostBudget::new("s", 10);
        let b = a.clone();
        assert!(a.same(&b) && !a.same(&HostBudget::new("s", 10)));
        let _r = a.try_reserve(10).expect("fits");
        assert_eq!(b.used(), 10);
        assert!(b.try_reserve(1).is_err());
        let zero = b.try_reserve(0).expect("zero always fits");
        assert_eq!(zero.bytes(), 0);
    }

    #[test]
    fn huge_asks_do_not_overflow() {
        let b = HostBudget::unlimited("s");
        let _r = b.try_reserve(usize::MAX - 1).expect("fits");
        let err = b.try_reserve(2).expect_err("would overflow");
        assert_eq!(err.used, usize::MAX - 1);
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let b = HostBudget::new("s", 1000);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut granted = 0;
                    for _ in 0..10_000 {
                        if let Ok(r) = b.try_reserve(7) {
                            assert!(b.used() <= 1000);
                            granted += 1;
                            drop(r);
                        }
                    }
                    granted
                })
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().expect("join")).sum();
        assert!(granted > 0);
        assert_eq!(b.used(), 0);
        assert!(b.peak() <= 1000);
    }
}
