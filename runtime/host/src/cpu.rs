//! Guest CPU time and the per-sink CPU quota (`limits.cpu`).
//!
//! **Measuring.** Every call into a guest (`instantiate`, `init`, `write`,
//! `held`) is a future the host polls; [`Metered`] reads the thread's CPU
//! clock (`CLOCK_THREAD_CPUTIME_ID`) when each poll begins and ends and
//! charges the difference to the sink. A call waiting in a host call that
//! is not ready (SQL, HTTP, Kafka) or paused by the quota is suspended:
//! its poll has returned, so the wait, and whatever the thread runs for
//! other sinks meanwhile, is not counted. What runs inside a poll is the
//! sink's wasm and the host's work for it at that moment (lowering the
//! arguments, lifting the results, a host call that completes at once),
//! and it is all charged to the sink. The clock is read twice per poll
//! and once per epoch tick ([`CpuClock::checkpoint`]), not at every
//! crossing between wasm and the host: reading the thread clock is a
//! system call (no vDSO for thread clocks), and reading it at every host
//! call, as the meter did before, cost 13 % of the process's CPU with the
//! sls sink (docs/benchmarks.md, profile §6). Polls also count the sink's
//! instances running at each moment; the most at once is
//! [`CpuQuota::peak_in_wasm`].
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

/// What the polls of a store's calls charge to, shared by the store's
/// [`CpuClock`] (its epoch callback) and each call's [`Metered`] future.
/// A store is polled by one thread at a time, so plain atomics do.
pub(crate) struct Meter {
    quota: CpuQuota,
    /// Guest CPU of this store's instance (shared with its `SinkInstance`).
    instance_nanos: Arc<AtomicU64>,
    /// The thread's CPU time, plus one, when the current poll of a call
    /// began (or its last checkpoint); 0 between polls.
    since: AtomicU64,
}

impl Meter {
    /// A poll of a call begins: the clock runs, and the instance counts as
    /// running for its sink ([`CpuQuota::peak_in_wasm`]).
    fn start(&self) {
        let inner = &self.quota.inner;
        let now = inner.in_wasm.fetch_add(1, Ordering::Relaxed) + 1;
        inner.peak_in_wasm.fetch_max(now, Ordering::Relaxed);
        self.since
            .store(thread_cpu_nanos().saturating_add(1), Ordering::Relaxed);
    }

    /// The poll ends (the call returned, or waits in a host call or a
    /// pause): charge what it used.
    fn stop(&self) {
        let since = self.since.swap(0, Ordering::Relaxed);
        if since != 0 {
            self.quota.inner.in_wasm.fetch_sub(1, Ordering::Relaxed);
            self.charge(thread_cpu_nanos().saturating_sub(since - 1));
        }
    }

    /// Charges what the running poll used so far (at an epoch tick, so that
    /// the quota sees a guest that computes without leaving its poll).
    fn checkpoint(&self) {
        let since = self.since.load(Ordering::Relaxed);
        if since != 0 {
            let now = thread_cpu_nanos();
            self.since.store(now.saturating_add(1), Ordering::Relaxed);
            self.charge(now.saturating_sub(since - 1));
        }
    }

    fn charge(&self, used: u64) {
        self.instance_nanos.fetch_add(used, Ordering::Relaxed);
        self.quota.charge(used);
    }
}

/// A call into the guest (`instantiate`, `init`, `write`, `held`) whose
/// polls are metered: the thread's CPU clock is read when each poll begins
/// and ends, and the difference charged to the sink. While the call waits
/// (inside a host call that is not ready: SQL, HTTP; or paused by the
/// quota) it is not being polled, and what the thread runs meanwhile is
/// not charged. Host work done inside a poll (lowering the arguments,
/// lifting the results, a host call that completes at once) is done for
/// the sink and is charged to it.
pub(crate) struct Metered<F> {
    inner: std::pin::Pin<Box<F>>,
    meter: Arc<Meter>,
}

impl<F> Metered<F> {
    pub(crate) fn new(meter: Arc<Meter>, call: F) -> Self {
        Self {
            inner: Box::pin(call),
            meter,
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        /// Stops the clock when the poll ends, also by a panic.
        struct Stop<'a>(&'a Meter);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.stop();
            }
        }
        let this = &mut *self;
        this.meter.start();
        let _stop = Stop(&this.meter);
        this.inner.as_mut().poll(cx)
    }
}

/// The per-store half of the meter.
pub(crate) struct CpuClock {
    meter: Arc<Meter>,
    /// Wall time the quota paused the current call, in ns.
    call_paused: Arc<AtomicU64>,
}

impl CpuClock {
    pub(crate) fn new(quota: CpuQuota, instance_nanos: Arc<AtomicU64>) -> Self {
        Self {
            meter: Arc::new(Meter {
                quota,
                instance_nanos,
                since: AtomicU64::new(0),
            }),
            call_paused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The meter a call's [`Metered`] future charges to.
    pub(crate) fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }

    /// A call into the guest starts.
    pub(crate) fn begin_call(&mut self) {
        self.call_paused.store(0, Ordering::Relaxed);
    }

    /// At an epoch tick (inside the call's poll): charge what the guest
    /// used so far, so that [`CpuQuota::pause_needed`] is current.
    pub(crate) fn checkpoint(&self) {
        self.meter.checkpoint();
    }

    /// Wall time the quota has paused the current call so far.
    pub(crate) fn call_paused(&self) -> Duration {
        Duration::from_nanos(self.call_paused.load(Ordering::Relaxed))
    }

    /// A pause of `wait` inside the current call (see [`CpuQuota::pause`]).
    pub(crate) fn pause(&self, wait: Duration) -> impl Future<Output = ()> + Send + 'static {
        let quota = self.meter.quota.pause(wait);
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
        &self.meter.quota
    }
}

#[cfg(test)]
mod tests;
