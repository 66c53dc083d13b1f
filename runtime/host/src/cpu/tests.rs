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

/// Burns `ms` of this thread's CPU time (not wall time: on a busy
/// machine the thread may wait for a core meanwhile).
fn busy(ms: u64) {
    let start = thread_cpu_nanos();
    let mut x = 0u64;
    while thread_cpu_nanos() - start < ms * 1_000_000 {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    f.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

#[test]
fn a_call_is_charged_for_its_polls_not_for_its_waits() {
    use std::task::Poll;
    let q = CpuQuota::new("s", None);
    let mine = Arc::new(AtomicU64::new(0));
    let clock = CpuClock::new(q.clone(), mine.clone());
    let mut polls = 0;
    // Works 20 ms, waits (a host call not ready), works 20 ms more.
    let call = std::future::poll_fn(|_| {
        polls += 1;
        busy(20);
        if polls < 2 {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    });
    let mut call = std::pin::pin!(Metered::new(clock.meter(), call));
    assert!(poll_once(call.as_mut()).is_pending());
    let first = q.used();
    assert!(first >= Duration::from_millis(20), "{first:?}");
    assert_eq!(q.inner.in_wasm.load(Ordering::Relaxed), 0, "not running");
    // The thread works for others while the call waits: not charged.
    busy(30);
    assert_eq!(q.used(), first);
    assert!(poll_once(call.as_mut()).is_ready());
    let second = q.used() - first;
    assert!(
        second >= Duration::from_millis(20) && second < Duration::from_millis(30),
        "{second:?}"
    );
    assert_eq!(mine.load(Ordering::Relaxed), q.used().as_nanos() as u64);
}

#[test]
fn an_epoch_checkpoint_charges_a_poll_that_runs_on() {
    let q = CpuQuota::new("s", Some(0.1));
    let clock = CpuClock::new(q.clone(), Arc::new(AtomicU64::new(0)));
    let meter = clock.meter();
    let call = std::future::poll_fn(|_| {
        busy(20);
        // An epoch tick: the quota sees the 20 ms before the poll ends.
        clock.checkpoint();
        assert!(q.used() >= Duration::from_millis(20), "{:?}", q.used());
        assert!(q.pause_needed().is_some(), "20 ms is over a 10 ms burst");
        std::task::Poll::Ready(())
    });
    assert!(poll_once(std::pin::pin!(Metered::new(meter, call))).is_ready());
    assert!(q.used() < Duration::from_millis(40), "{:?}", q.used());
}

#[test]
fn instances_running_are_counted_per_sink() {
    let q = CpuQuota::new("s", Some(0.5));
    let a = CpuClock::new(q.clone(), Arc::new(AtomicU64::new(0)));
    let b = CpuClock::new(q.clone(), Arc::new(AtomicU64::new(0)));
    let (ma, mb) = (a.meter(), b.meter());
    let outer = std::future::poll_fn(|_| {
        assert_eq!(q.inner.in_wasm.load(Ordering::Relaxed), 1);
        let inner = std::future::poll_fn(|_| std::task::Poll::Ready(()));
        assert!(poll_once(std::pin::pin!(Metered::new(mb.clone(), inner))).is_ready());
        std::task::Poll::Ready(())
    });
    assert!(poll_once(std::pin::pin!(Metered::new(ma.clone(), outer))).is_ready());
    assert_eq!(q.peak_in_wasm(), 2);
    assert_eq!(q.inner.in_wasm.load(Ordering::Relaxed), 0);
    // A poll that panics still stops its clock.
    let panics = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let call = std::future::poll_fn(|_| -> std::task::Poll<()> { panic!("guest") });
        let _ = poll_once(std::pin::pin!(Metered::new(ma.clone(), call)));
    }));
    assert!(panics.is_err());
    assert_eq!(q.inner.in_wasm.load(Ordering::Relaxed), 0);
    assert_eq!(q.peak_in_wasm(), 2, "the peak is kept");
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
