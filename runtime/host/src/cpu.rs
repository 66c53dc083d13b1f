//! Guest CPU time and the per-sink CPU quota (`limits.cpu`).
//!
//! **Measuring.** A store's call hook ([`wasmtime::Store::call_hook`])
//! marks every entry into and exit from wasm code (calls into the guest,
//! host calls and libcalls, the epoch check included). The thread's CPU
//! clock (`CLOCK_THREAD_CPUTIME_ID`) is read at both ends and the
//! difference charged to the sink: time the guest spends waiting in host
//! calls (SQL, HTTP, a throttle pause) is not counted, and time the OS gives
//! another thread is not counted either. Within one call from the host the
//! clock runs from the call's start to its end except inside host calls,
//! so the host's lowering of the arguments and lifting of the results are
//! charged to the sink too; the clock is not read again each time the
//! lowering enters the guest's `cabi_realloc` (once per string: reading
//! the thread clock is a system call, and those reads were 83 % of the
//! cost of handing a batch to the guest; [`CpuClock::hook`]). Between an entry and an exit the
//! fiber never leaves its thread (it can only be suspended inside a host
//! call), so the thread clock measures the guest alone. The same marks
//! count the sink's instances inside wasm code at each moment; the most at
//! once is [`CpuQuota::peak_in_wasm`].
//!
//! **Limiting.** A token bucket per sink, shared by all its instances
//! (workers and rebuilds): it refills at `cores` CPU-seconds per wall
//! second and holds at most [`BURST`] of wall time's worth. Charges may
//! take it below zero. At every epoch tick the running guest checks it
//! (the store's epoch callback), and before every call the instance checks
//! it too: while it is below zero the guest is paused (an async sleep, the
//! thread runs other sinks meanwhile) until it is back at zero. A guest that
//! computes flat out thus runs about one epoch tick, then pauses, and gets
//! `cores` of CPU on average. Pauses inside a call count against that
//! call's wall-time deadline.
//!
//! **One sink, several instances.** The bucket is an average; it does not
//! stop two instances of a sink (`workers: 2`) from running wasm at the same
//! moment, each for a tick, and so holding two threads (on a 2-core machine,
//! every runtime thread) for a sink with a fifth of a core. So under a quota
//! an instance also needs a turn for each call into its guest
//! ([`CpuQuota::turn`]): a sink has ceil(`cores`) turns (`200m`: 1, `1500m`:
//! 2), and a call waits for one before it starts. The wait does not count
//! against the call's deadline: the deadline bounds what the guest itself
//! does, and the wait is bounded anyway (the turn's holder is in a call with
//! its own deadline); counting it would time out, fault and rebuild an
//! instance for its sibling's work. The cost: the sink's calls run at most
//! ceil(`cores`) at a time, host calls (SQL, HTTP) included, so workers
//! beyond that no longer overlap their waits on the database.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Wall time whose worth of quota a sink may save up and spend at once:
/// 100 ms (a `200m` sink may run 20 ms without a pause after idling).
pub(crate) const BURST: Duration = Duration::from_millis(100);

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) in ns.
pub(crate) fn thread_cpu_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// Parses a CPU quantity the way Kubernetes does for `cpu`: `200m`
/// (millicores), `0.5`, `1`, `2`. Returns cores; must be above zero.
///
/// ```
/// assert_eq!(kubesink_host::cpu::parse_cores("200m"), Ok(0.2));
/// assert_eq!(kubesink_host::cpu::parse_cores("1.5"), Ok(1.5));
/// ```
pub fn parse_cores(text: &str) -> Result<f64, String> {
    let bad = || format!("`{text}` is not a CPU quantity (use e.g. 200m, 0.5, 1)");
    let t = text.trim();
    let (num, scale) = match t.strip_suffix('m') {
        Some(milli) => (milli, 1e-3),
        None => (t, 1.0),
    };
    if num.is_empty()
        || !num.chars().all(|c| c.is_ascii_digit() || c == '.')
        || num.starts_with('.')
        || num.ends_with('.')
    {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let cores = value * scale;
    if !(cores.is_finite() && cores > 0.0) {
        return Err(format!("`{text}` must be above zero"));
    }
    if cores < 0.001 {
        return Err(format!("`{text}` is below the smallest quota of 1m"));
    }
    Ok(cores)
}

struct Bucket {
    /// CPU nanoseconds the sink may still use; negative when in debt.
    tokens: f64,
    refilled: Instant,
}

struct Inner {
    sink: String,
    cores: Option<f64>,
    used_nanos: AtomicU64,
    paused_nanos: AtomicU64,
    pauses: AtomicU64,
    /// Instances of the sink inside wasm code now, and the most at once.
    in_wasm: AtomicUsize,
    peak_in_wasm: AtomicUsize,
    /// With a quota: ceil(cores) turns, one held by each guest call.
    turns: Option<Arc<tokio::sync::Semaphore>>,
    bucket: Mutex<Bucket>,
}

/// A turn of one of a sink's instances to call into its guest
/// ([`CpuQuota::turn`]); given back when dropped.
#[derive(Debug)]
#[must_use = "the turn ends when it is dropped"]
pub(crate) struct Turn {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// One sink's guest CPU meter and (optional) quota, shared by its
/// instances. Cheap to clone.
#[derive(Clone)]
pub struct CpuQuota {
    inner: Arc<Inner>,
}

impl fmt::Debug for CpuQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuQuota")
            .field("sink", &self.inner.sink)
            .field("cores", &self.inner.cores)
            .field("used", &self.used())
            .field("paused", &self.paused())
            .finish()
    }
}

impl CpuQuota {
    /// The meter of sink `sink`, limited to `cores` (None: no limit).
    pub fn new(sink: &str, cores: Option<f64>) -> Self {
        let cores = cores.filter(|c| c.is_finite() && *c > 0.0);
        Self {
            inner: Arc::new(Inner {
                sink: sink.to_owned(),
                cores,
                used_nanos: AtomicU64::new(0),
                paused_nanos: AtomicU64::new(0),
                pauses: AtomicU64::new(0),
                in_wasm: AtomicUsize::new(0),
                peak_in_wasm: AtomicUsize::new(0),
                turns: cores.map(|c| Arc::new(tokio::sync::Semaphore::new(turns(c)))),
                bucket: Mutex::new(Bucket {
                    tokens: cores.map_or(0.0, capacity),
                    refilled: Instant::now(),
                }),
            }),
        }
    }

    /// The sink.
    pub fn sink(&self) -> &str {
        &self.inner.sink
    }

    /// The quota in cores, if any.
    pub fn cores(&self) -> Option<f64> {
        self.inner.cores
    }

    /// Guest CPU time used so far, all instances together.
    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.inner.used_nanos.load(Ordering::Relaxed))
    }

    /// Wall time guests of this sink spent paused by the quota so far.
    pub fn paused(&self) -> Duration {
        Duration::from_nanos(self.inner.paused_nanos.load(Ordering::Relaxed))
    }

    /// How many pauses the quota imposed so far.
    pub fn pauses(&self) -> u64 {
        self.inner.pauses.load(Ordering::Relaxed)
    }

    /// The most instances of the sink that ran wasm code at the same
    /// moment so far.
    pub fn peak_in_wasm(&self) -> usize {
        self.inner.peak_in_wasm.load(Ordering::Relaxed)
    }

    /// True when two handles are the same sink's meter.
    pub fn same(&self, other: &CpuQuota) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Waits for a turn to call into the guest, then, while the sink is
    /// over its quota, pauses until it is back within it. With a quota of
    /// `cores`, at most ceil(`cores`) of the sink's instances hold a turn at
    /// once, so they never run wasm on more threads at the same moment than
    /// the quota has cores; without a quota the turn is free. Hold it for
    /// the whole call.
    pub(crate) async fn turn(&self) -> Turn {
        let permit = match &self.inner.turns {
            Some(turns) => turns.clone().acquire_owned().await.ok(),
            None => None,
        };
        if let Some(wait) = self.pause_needed() {
            self.pause(wait).await;
        }
        Turn { _permit: permit }
    }

    /// Charges `nanos` of guest CPU.
    pub fn charge(&self, nanos: u64) {
        if nanos == 0 {
            return;
        }
        self.inner.used_nanos.fetch_add(nanos, Ordering::Relaxed);
        if self.inner.cores.is_some() {
            let mut b = self.lock();
            b.tokens -= nanos as f64;
        }
    }

    /// How long the sink must pause now: `None` when it is within its
    /// quota (or has none), else the wall time until its bucket is back at
    /// zero.
    pub(crate) fn pause_needed(&self) -> Option<Duration> {
        let cores = self.inner.cores?;
        let now = Instant::now();
        let mut b = self.lock();
        let elapsed = now.saturating_duration_since(b.refilled).as_nanos() as f64;
        b.tokens = (b.tokens + elapsed * cores).min(capacity(cores));
        b.refilled = now;
        if b.tokens >= 0.0 {
            return None;
        }
        let wait = (-b.tokens / cores).ceil() as u64;
        Some(Duration::from_nanos(wait.max(1)))
    }

    /// Records a pause of `wall` (taken by the caller).
    pub(crate) fn note_pause(&self, wall: Duration) {
        self.inner.pauses.fetch_add(1, Ordering::Relaxed);
        self.inner.paused_nanos.fetch_add(
            u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// A future that pauses for `wait` and records it.
    pub fn pause(&self, wait: Duration) -> impl Future<Output = ()> + Send + 'static {
        let me = self.clone();
        async move {
            let started = Instant::now();
            tokio::time::sleep(wait).await;
            me.note_pause(started.elapsed());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.inner.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How many of a sink's instances may be inside a guest call at once under
/// a quota of `cores`: ceil(`cores`), at least 1.
fn turns(cores: f64) -> usize {
    (cores.ceil() as usize).max(1)
}

fn capacity(cores: f64) -> f64 {
    BURST.as_nanos() as f64 * cores
}

/// The per-store half of the meter: open while the guest's wasm code runs.
pub(crate) struct CpuClock {
    quota: CpuQuota,
    /// Thread CPU time when the guest last entered wasm, if it is in wasm.
    since: Option<u64>,
    /// A call from the host (`init`, `write`, `held`) is in progress: the
    /// clock runs from its start to its end, except inside host calls.
    in_call: bool,
    /// Host calls (imports, libcalls) the guest is inside of.
    host_depth: u32,
    /// Guest CPU of this store's instance (shared with its `SinkInstance`).
    instance_nanos: Arc<AtomicU64>,
    /// Wall time the quota paused the current call, in ns.
    call_paused: Arc<AtomicU64>,
}

impl CpuClock {
    pub(crate) fn new(quota: CpuQuota, instance_nanos: Arc<AtomicU64>) -> Self {
        Self {
            quota,
            since: None,
            in_call: false,
            host_depth: 0,
            instance_nanos,
            call_paused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A call into the guest starts: the clock runs from here (lowering
    /// the arguments, which calls the guest's `cabi_realloc` once per
    /// string and list, included) to [`end_call`](Self::end_call), except
    /// inside host calls.
    pub(crate) fn begin_call(&mut self) {
        self.call_paused.store(0, Ordering::Relaxed);
        self.in_call = true;
        self.host_depth = 0;
        self.enter();
    }

    /// The call into the guest has returned (or was abandoned).
    pub(crate) fn end_call(&mut self) {
        self.in_call = false;
        self.host_depth = 0;
        self.leave();
    }

    /// The store's call hook. Reading the thread clock is a system call
    /// (~0.5 µs here): reading it on every entry into wasm cost more than
    /// the guest's work, because lowering a batch enters the guest once
    /// per string (`cabi_realloc`). So during a call the clock is read
    /// only where the guest leaves for the host and comes back (imports,
    /// libcalls such as the epoch check and `memory.grow`), and around the
    /// guest's own re-entries from inside a host call (a host function
    /// lowering its results).
    pub(crate) fn hook(&mut self, hook: wasmtime::CallHook) {
        use wasmtime::CallHook;
        match hook {
            CallHook::CallingWasm => {
                if self.since.is_none() {
                    self.enter();
                }
            }
            CallHook::ReturningFromWasm => {
                // At the top of a call the clock runs on to `end_call`.
                if !self.in_call || self.host_depth > 0 {
                    self.leave();
                }
            }
            CallHook::CallingHost => {
                self.host_depth += 1;
                self.leave();
            }
            CallHook::ReturningFromHost => {
                self.host_depth = self.host_depth.saturating_sub(1);
                self.enter();
            }
        }
    }

    /// Wall time the quota has paused the current call so far.
    pub(crate) fn call_paused(&self) -> Duration {
        Duration::from_nanos(self.call_paused.load(Ordering::Relaxed))
    }

    /// A pause of `wait` inside the current call (see [`CpuQuota::pause`]).
    pub(crate) fn pause(&self, wait: Duration) -> impl Future<Output = ()> + Send + 'static {
        let quota = self.quota.pause(wait);
        let call_paused = self.call_paused.clone();
        async move {
            let started = Instant::now();
            quota.await;
            call_paused.fetch_add(
                u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
    }

    pub(crate) fn quota(&self) -> &CpuQuota {
        &self.quota
    }

    /// The guest enters wasm code.
    pub(crate) fn enter(&mut self) {
        if self.since.is_none() {
            let inner = &self.quota.inner;
            let now = inner.in_wasm.fetch_add(1, Ordering::Relaxed) + 1;
            inner.peak_in_wasm.fetch_max(now, Ordering::Relaxed);
        }
        self.since = Some(thread_cpu_nanos());
    }

    /// The guest leaves wasm code: charge what it used since `enter`.
    pub(crate) fn leave(&mut self) {
        if let Some(since) = self.since.take() {
            self.quota.inner.in_wasm.fetch_sub(1, Ordering::Relaxed);
            let used = thread_cpu_nanos().saturating_sub(since);
            self.instance_nanos.fetch_add(used, Ordering::Relaxed);
            self.quota.charge(used);
        }
    }
}

impl Drop for CpuClock {
    /// A store dropped inside wasm code (its call abandoned at the
    /// deadline) is no longer running it.
    fn drop(&mut self) {
        if self.since.take().is_some() {
            self.quota.inner.in_wasm.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_cpu_quantities() {
        assert_eq!(parse_cores("200m"), Ok(0.2));
        assert_eq!(parse_cores("1"), Ok(1.0));
        assert_eq!(parse_cores("0.5"), Ok(0.5));
        assert_eq!(parse_cores(" 2 "), Ok(2.0));
        assert_eq!(parse_cores("1500m"), Ok(1.5));
        for bad in [
            "", "m", "-1", "1.", ".5", "1e3", "2 cores", "0", "0m", "0.0001",
        ] {
            assert!(parse_cores(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_cores("lots").expect_err("bad").contains("`lots`"));
    }

    #[test]
    fn no_quota_never_pauses_but_counts() {
        let q = CpuQuota::new("s", None);
        q.charge(5_000_000_000);
        assert_eq!(q.pause_needed(), None);
        assert_eq!(q.used(), Duration::from_secs(5));
    }

    #[test]
    fn a_debt_pauses_for_its_refill_time() {
        let q = CpuQuota::new("s", Some(0.5));
        // The full bucket (50 ms of CPU at 0.5 cores) absorbs a first charge.
        q.charge(40_000_000);
        assert_eq!(q.pause_needed(), None);
        // 100 ms more: about 90 ms of debt, paid back at 0.5 s/s.
        q.charge(100_000_000);
        let wait = q.pause_needed().expect("in debt");
        assert!(
            wait > Duration::from_millis(150) && wait <= Duration::from_millis(180),
            "{wait:?}"
        );
    }

    #[test]
    fn the_bucket_refills_with_wall_time_up_to_the_burst() {
        let q = CpuQuota::new("s", Some(1.0));
        q.charge(BURST.as_nanos() as u64 + 5_000_000);
        let first = q.pause_needed().expect("5 ms of debt");
        assert!(first <= Duration::from_millis(5), "{first:?}");
        // Refill: wait (bounded) until the debt is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        while q.pause_needed().is_some() {
            assert!(Instant::now() < deadline, "never refilled");
            std::thread::yield_now();
        }
        // Never more than the burst is saved up.
        let b = q.lock();
        assert!(b.tokens <= capacity(1.0));
    }

    #[test]
    fn thread_cpu_time_counts_work_not_sleep() {
        let t0 = thread_cpu_nanos();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu_nanos() - t0;
        assert!(slept < 20_000_000, "sleeping used {slept} ns of CPU");
        let t1 = thread_cpu_nanos();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let busy = thread_cpu_nanos() - t1;
        assert!(busy > 10_000_000, "busy loop used only {busy} ns of CPU");
    }

    #[test]
    fn the_clock_charges_only_between_enter_and_leave() {
        let q = CpuQuota::new("s", None);
        let mine = Arc::new(AtomicU64::new(0));
        let mut c = CpuClock::new(q.clone(), mine.clone());
        c.leave(); // not in wasm: nothing
        assert_eq!(q.used(), Duration::ZERO);
        c.enter();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        c.leave();
        let used = q.used();
        assert!(used > Duration::from_millis(5), "{used:?}");
        assert_eq!(mine.load(Ordering::Relaxed), used.as_nanos() as u64);
    }

    fn busy(ms: u64) {
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(ms) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    #[test]
    fn during_a_call_the_clock_runs_through_reentries_and_stops_in_host_calls() {
        use wasmtime::CallHook::*;
        let q = CpuQuota::new("s", None);
        let mut c = CpuClock::new(q.clone(), Arc::new(AtomicU64::new(0)));
        c.begin_call();
        // Lowering the arguments: the guest's realloc, entered and left.
        for _ in 0..3 {
            c.hook(CallingWasm);
            c.hook(ReturningFromWasm);
            assert!(c.since.is_some(), "the clock runs on between re-entries");
        }
        c.hook(CallingWasm); // the export itself
        busy(20);
        c.hook(CallingHost); // an import: stops the clock
        assert!(c.since.is_none());
        let before = q.used();
        assert!(before > Duration::from_millis(5), "{before:?}");
        busy(20);
        // The import lowers its result into the guest: counted, then off.
        c.hook(CallingWasm);
        assert!(c.since.is_some());
        c.hook(ReturningFromWasm);
        assert!(
            c.since.is_none(),
            "a re-entry inside a host call stops again"
        );
        let host = q.used() - before;
        assert!(
            host < Duration::from_millis(10),
            "host work charged: {host:?}"
        );
        c.hook(ReturningFromHost);
        busy(20);
        c.hook(ReturningFromWasm); // the export returns: still running
        assert!(c.since.is_some());
        c.end_call();
        assert!(c.since.is_none());
        let after = q.used() - before;
        assert!(after > Duration::from_millis(15), "{after:?}");
        assert_eq!(q.inner.in_wasm.load(Ordering::Relaxed), 0);
        // Outside a call (nothing begun), entries and exits count as before.
        c.hook(CallingWasm);
        c.hook(ReturningFromWasm);
        assert!(c.since.is_none());
    }

    #[tokio::test]
    async fn a_sink_has_ceil_cores_turns_and_none_without_a_quota() {
        for (cores, n) in [(0.2, 1), (1.0, 1), (1.5, 2), (2.0, 2)] {
            let q = CpuQuota::new("s", Some(cores));
            let held: Vec<Turn> = futures_util::future::join_all((0..n).map(|_| q.turn())).await;
            assert_eq!(held.len(), n);
            use futures_util::FutureExt as _;
            assert!(
                q.turn().now_or_never().is_none(),
                "{cores} cores: a turn past {n}"
            );
            drop(held);
            let _again = q.turn().await;
        }
        let free = CpuQuota::new("s", None);
        let _all: Vec<Turn> = futures_util::future::join_all((0..64).map(|_| free.turn())).await;
    }

    #[test]
    fn instances_inside_wasm_are_counted_per_sink() {
        let q = CpuQuota::new("s", Some(0.5));
        let mut a = CpuClock::new(q.clone(), Arc::new(AtomicU64::new(0)));
        let mut b = CpuClock::new(q.clone(), Arc::new(AtomicU64::new(0)));
        a.enter();
        a.enter(); // still the same stretch of wasm
        assert_eq!(q.peak_in_wasm(), 1);
        b.enter();
        assert_eq!(q.peak_in_wasm(), 2);
        b.leave();
        a.leave();
        a.leave(); // not in wasm: nothing
        assert_eq!(q.inner.in_wasm.load(Ordering::Relaxed), 0);
        // A store dropped inside wasm (its call abandoned) leaves it.
        a.enter();
        drop(a);
        assert_eq!(q.inner.in_wasm.load(Ordering::Relaxed), 0);
        assert_eq!(q.peak_in_wasm(), 2, "the peak is kept");
    }
}
