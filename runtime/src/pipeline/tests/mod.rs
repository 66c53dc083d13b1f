//! The worker's retries, bisection and module swaps, and the pipeline's
//! shutdown and catch-up waits, against in-process fake sink instances (no
//! WebAssembly), on tokio's paused clock: a test's timings are exact, and a
//! wait that polls instead of awaiting a signal shows up as time passing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubesink_host::{CallError, FaultCause};
use kubesink_normalize::record::{Entry, RecordKind, Timestamp};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::entry::tombstone;
use super::lanes::{Lane, Swap};
use super::queue::SinkQueue;
use super::worker::{SinkContext, WorkerConfig};
use super::*;
use crate::config::{BatchConfig, RetryConfig};

mod held;

const INITIAL: Duration = Duration::from_millis(200);

/// How a fake instance answers `write`.
#[derive(Clone)]
enum Answer {
    /// `retryable` for the first `n` calls, then accepts every batch.
    RetryableThenOk(usize),
    /// `fatal` for any batch holding the entry of this uid.
    Poisoned(&'static str),
    /// A trap for every batch.
    AlwaysFaults,
    /// `retryable` for every batch.
    AlwaysRetryable,
    /// Accepts every batch after this long.
    Slow(Duration),
    /// Never answers.
    Stuck,
}

/// What a fake instance saw.
#[derive(Debug, Default)]
struct Seen {
    /// Every `write` call, by the uids of its batch.
    calls: Vec<Vec<String>>,
    /// How often each uid was accepted.
    delivered: HashMap<String, usize>,
    invalidations: usize,
}

/// A sink instance in the test's process.
struct Fake {
    origin: String,
    answer: Answer,
    seen: Arc<Mutex<Seen>>,
    /// Woken at every `write` call.
    called: Arc<Notify>,
}

impl Fake {
    fn new(origin: &str, answer: Answer) -> Self {
        Self {
            origin: origin.to_owned(),
            answer,
            seen: Arc::default(),
            called: Arc::default(),
        }
    }

    fn seen(&self) -> Arc<Mutex<Seen>> {
        self.seen.clone()
    }
}

fn uid(entry: &Entry) -> String {
    entry.uid().to_owned()
}

impl Instance for Fake {
    fn origin(&self) -> &str {
        &self.origin
    }

    async fn write(&mut self, batch: &[Entry]) -> Result<(), CallError> {
        let uids: Vec<String> = batch.iter().map(uid).collect();
        let call = {
            let mut seen = self.seen.lock().unwrap();
            seen.calls.push(uids.clone());
            seen.calls.len()
        };
        self.called.notify_waiters();
        let result = match &self.answer {
            Answer::RetryableThenOk(n) if call <= *n => {
                Err(CallError::Retryable(format!("{}: busy", self.origin)))
            }
            Answer::RetryableThenOk(_) => Ok(()),
            Answer::Poisoned(bad) if uids.iter().any(|u| u == bad) => {
                Err(CallError::Fatal(format!("{}: rejects {bad}", self.origin)))
            }
            Answer::Poisoned(_) => Ok(()),
            Answer::AlwaysFaults => Err(CallError::Fault {
                cause: FaultCause::Trap,
                detail: format!("{}: trapped", self.origin),
            }),
            Answer::AlwaysRetryable => Err(CallError::Retryable(format!("{}: down", self.origin))),
            Answer::Slow(took) => {
                tokio::time::sleep(*took).await;
                Ok(())
            }
            Answer::Stuck => std::future::pending().await,
        };
        if result.is_ok() {
            let mut seen = self.seen.lock().unwrap();
            for u in uids {
                *seen.delivered.entry(u).or_default() += 1;
            }
        }
        result
    }

    async fn held(&mut self, _kind: RecordKind) -> Result<Vec<String>, CallError> {
        let seen = self.seen.lock().unwrap();
        Ok(seen.delivered.keys().cloned().collect())
    }

    fn invalidate(&mut self) {
        self.seen.lock().unwrap().invalidations += 1;
    }
}

fn entries(n: usize) -> Vec<Entry> {
    let at = Timestamp {
        seconds: 1,
        nanos: 0,
    };
    (0..n)
        .map(|i| tombstone(RecordKind::Event, format!("e{i}"), at))
        .collect()
}

fn worker_config(name: &str, max_records: usize) -> WorkerConfig {
    WorkerConfig {
        name: name.to_owned(),
        module: format!("{name}.wasm"),
        batch: BatchConfig {
            max_records,
            max_delay: Duration::ZERO,
        },
        retry: RetryConfig {
            initial: INITIAL,
            max: Duration::from_secs(5),
        },
    }
}

fn context(name: &str, max_records: usize) -> SinkContext {
    SinkContext {
        config: worker_config(name, max_records),
        counters: Arc::new(DeliveryCounters::new(name, &Ops::new())),
        lag: Arc::new(SinkLag::new(name)),
        catch_up: CatchUpLink::default(),
        frontiers: None,
    }
}

/// A lane (queue and worker) for `instance`, with `entries` queued before
/// its worker starts (so that they make one batch) and the queue closed:
/// the worker ends once it has delivered them. Returns the lane and the
/// sender of swaps to its worker.
fn lane(
    instance: Option<Fake>,
    queued: Vec<Entry>,
    sink: &SinkContext,
) -> (Lane, mpsc::Sender<Swap<Fake>>) {
    let queue = Arc::new(SinkQueue::new(1000, false));
    for e in queued {
        queue.try_push(e, 0).expect("room");
    }
    queue.close();
    let (swaps, swaps_rx) = mpsc::channel(1);
    let lane = Lane::spawn(instance, queue, sink.clone(), (unused_slot(), swaps_rx));
    (lane, swaps)
}

/// A [`ModuleSlot`] end that no worker listens to: fakes are swapped in
/// through their own channel.
fn unused_slot() -> mpsc::Sender<Swap> {
    mpsc::channel(1).0
}

fn counts(sink: &SinkContext) -> SinkReport {
    sink.counters.report(&sink.config.name)
}

#[tokio::test(start_paused = true)]
async fn a_retryable_batch_is_delivered_once_after_backing_off_each_retry() {
    let fake = Fake::new("flaky", Answer::RetryableThenOk(3));
    let seen = fake.seen();
    let sink = context("flaky", 100);
    let started = Instant::now();
    let (lane, _swaps) = lane(Some(fake), entries(5), &sink);
    lane.worker.await.unwrap();

    let r = counts(&sink);
    assert_eq!((r.delivered, r.failed), (5, 0));
    assert_eq!((r.retries, r.faults, r.batches), (3, 0, 4));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.calls.len(), 4, "the whole batch, four times");
    assert!(seen.calls.iter().all(|c| c.len() == 5), "{:?}", seen.calls);
    assert!(seen.delivered.values().all(|&n| n == 1), "{seen:?}");
    assert_eq!(seen.delivered.len(), 5);
    assert_eq!(
        seen.invalidations, 0,
        "a retryable error keeps the instance"
    );
    // Three backoffs, each within its jitter band: [bound / 10, bound] for
    // the bounds 200, 400 and 800 ms.
    let waited = started.elapsed();
    assert!(
        waited >= INITIAL * 7 / 10 && waited <= INITIAL * 7,
        "backed off {waited:?}"
    );
    assert!(!sink.lag.retrying(), "delivered: no longer retrying");
}

#[tokio::test(start_paused = true)]
async fn a_poisoned_entry_is_bisected_out_and_every_other_entry_delivered_once() {
    let fake = Fake::new("picky", Answer::Poisoned("e5"));
    let seen = fake.seen();
    let sink = context("picky", 100);
    let (lane, _swaps) = lane(Some(fake), entries(8), &sink);
    lane.worker.await.unwrap();

    let r = counts(&sink);
    assert_eq!((r.delivered, r.failed), (7, 1));
    // 8 -> 4 -> 2 -> 1 entries fail, each a fault rebuilding the instance.
    assert_eq!((r.faults, r.retries), (4, 0));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.invalidations, 4);
    assert_eq!(seen.delivered.get("e5"), None);
    for i in (0..8).filter(|&i| i != 5) {
        assert_eq!(
            seen.delivered.get(&format!("e{i}")),
            Some(&1),
            "e{i}: {seen:?}"
        );
    }
    let failing: Vec<usize> = seen
        .calls
        .iter()
        .filter(|c| c.iter().any(|u| u == "e5"))
        .map(Vec::len)
        .collect();
    assert_eq!(failing, vec![8, 4, 2, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_sink_failing_every_call_costs_a_bounded_number_of_calls_per_batch() {
    let fake = Fake::new("broken", Answer::AlwaysFaults);
    let seen = fake.seen();
    let sink = context("broken", 1000);
    let (lane, _swaps) = lane(Some(fake), entries(500), &sink);
    lane.worker.await.unwrap();

    let r = counts(&sink);
    assert_eq!((r.delivered, r.failed), (0, 500));
    let calls = seen.lock().unwrap().calls.len() as u64;
    // At most every node of a binary tree of depth MAX_SPLIT_DEPTH.
    assert!(calls < 1 << (deliver::MAX_SPLIT_DEPTH + 1), "{calls} calls");
    assert_eq!(r.faults, calls);
    // The 64 pieces of the last level are failed whole.
    assert_eq!(
        seen.lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.len() <= 8)
            .count(),
        64
    );
}

#[tokio::test(start_paused = true)]
async fn a_swap_during_a_retry_backoff_takes_over_at_once_and_gets_the_batch() {
    let old = Fake::new("v1", Answer::AlwaysRetryable);
    let (old_seen, old_called) = (old.seen(), old.called.clone());
    let new = Fake::new("v2", Answer::RetryableThenOk(0));
    let new_seen = new.seen();
    let sink = context("swapped", 100);
    let first_call = old_called.notified();
    let (lane, swaps) = lane(Some(old), entries(3), &sink);
    first_call.await;
    // The first write failed; the worker now waits out its backoff.
    let asked = Instant::now();
    let (reply, taken) = oneshot::channel();
    swaps
        .send(Swap {
            instance: new,
            reply,
        })
        .await
        .unwrap();
    taken.await.unwrap();
    assert_eq!(
        asked.elapsed(),
        Duration::ZERO,
        "taken without waiting for the backoff"
    );
    lane.worker.await.unwrap();

    assert_eq!(old_seen.lock().unwrap().delivered.len(), 0);
    let new_seen = new_seen.lock().unwrap();
    assert_eq!(new_seen.calls, vec![vec!["e0", "e1", "e2"]]);
    assert_eq!(counts(&sink).delivered, 3);
}

#[tokio::test(start_paused = true)]
async fn a_sink_without_a_module_stops_as_soon_as_its_queue_is_closed() {
    let sink = context("pending", 100);
    let queue = Arc::new(SinkQueue::new(10, false));
    for e in entries(2) {
        queue.try_push(e, 0).expect("room");
    }
    let (_swaps, swaps_rx) = mpsc::channel::<Swap<Fake>>(1);
    let lane = Lane::spawn(None, queue.clone(), sink, (unused_slot(), swaps_rx));
    // The worker is waiting for its module.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert!(!lane.worker.is_finished());
    let closed = Instant::now();
    queue.close();
    lane.worker.await.unwrap();
    // A worker that looked at the queue on a timer would let time pass.
    assert_eq!(closed.elapsed(), Duration::ZERO);
    assert_eq!(queue.len(), 2, "nothing delivered without a module");
}

/// A pipeline of the given sinks (name, fake, queue capacity, max records
/// per batch), each with one worker, receiving events.
fn pipeline(sinks: Vec<(&str, Fake, usize, usize)>) -> Pipeline {
    let mut p = Pipeline::empty(Ops::new());
    for (name, fake, queue_capacity, max_records) in sinks {
        let setup = SinkSetup {
            config: worker_config(name, max_records),
            records: vec![config::RecordKind::Events],
            queue_capacity,
            coalesce: false,
            checkpoint: false,
        };
        p.add_sink(setup, vec![Some(fake)], |_| unused_slot());
    }
    p
}

#[tokio::test(start_paused = true)]
async fn shutdown_delivers_what_is_queued_within_the_grace() {
    let fake = Fake::new("slow", Answer::Slow(Duration::from_secs(1)));
    let seen = fake.seen();
    let p = pipeline(vec![("slow", fake, 100, 10)]);
    for e in entries(35) {
        p.send(e).await;
    }
    let started = Instant::now();
    let report = p.shutdown(Duration::from_secs(30)).await;

    assert_eq!(report.undelivered, vec![]);
    assert_eq!(report.reports[0].delivered, 35);
    assert_eq!(seen.lock().unwrap().delivered.len(), 35);
    // Four batches (10, 10, 10, 5) of a second each; returns when the
    // worker ends, not at the next look.
    assert_eq!(started.elapsed(), Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_a_stuck_sink_returns_at_the_grace_naming_what_was_not_delivered() {
    let stuck = Fake::new("stuck", Answer::Stuck);
    let fine = Fake::new("fine", Answer::Slow(Duration::from_millis(10)));
    let p = pipeline(vec![("stuck", stuck, 100, 2), ("fine", fine, 100, 2)]);
    for e in entries(5) {
        p.send(e).await;
    }
    let started = Instant::now();
    let grace = Duration::from_secs(7);
    let report = p.shutdown(grace).await;

    assert_eq!(started.elapsed(), grace);
    assert_eq!(report.undelivered, vec![("stuck".to_owned(), 5)]);
    let delivered: Vec<_> = report
        .reports
        .iter()
        .map(|r| (r.name.as_str(), r.delivered))
        .collect();
    assert_eq!(delivered, vec![("stuck", 0), ("fine", 5)]);
    assert!(
        p.ops().health.readiness().is_err(),
        "not ready while stopping"
    );
}

#[tokio::test(start_paused = true)]
async fn a_catch_up_waiting_for_room_gives_up_as_soon_as_the_sink_falls_behind() {
    let p = pipeline(vec![("stuck", Fake::new("stuck", Answer::Stuck), 1, 1)]);
    let lag = p.sinks[0].lag.clone();
    assert!(lag.fall_behind());
    assert!(lag.start_catch_up(), "its queue is empty");
    let mut e = entries(3).into_iter();
    let started = Instant::now();
    assert!(p.send_to("stuck", e.next().unwrap()).await);
    // Queued once the worker took the first one into its (stuck) write.
    assert!(p.send_to("stuck", e.next().unwrap()).await);
    // The queue is full for good now; falling behind ends the wait.
    let third = p.send_to("stuck", e.next().unwrap());
    let fall = async {
        tokio::task::yield_now().await;
        assert!(lag.lag_behind());
    };
    let (queued, ()) = tokio::join!(third, fall);
    assert!(!queued);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_lagging_sink_still_gets_deletions_within_its_headroom() {
    let p = pipeline(vec![
        (
            "fast",
            Fake::new("fast", Answer::Slow(Duration::ZERO)),
            100,
            1,
        ),
        ("stuck", Fake::new("stuck", Answer::Stuck), 1, 1),
    ]);
    let _catch_ups = p.enable_catch_up();
    let stuck = &p.sinks[1];
    let mut e = entries(5).into_iter();
    p.send(e.next().unwrap()).await;
    // Taken into the stuck write once the worker runs.
    while stuck.queued() > 0 {
        tokio::task::yield_now().await;
    }
    p.send(e.next().unwrap()).await;
    assert_eq!(stuck.lag.state(), LagState::Ok, "its queue holds one");
    p.send(e.next().unwrap()).await;
    assert_eq!(
        stuck.lag.state(),
        LagState::Lagging,
        "full while fast took it"
    );
    assert_eq!(stuck.lag.skipped(), 1);
    // Deletions (these entries are removals) are still queued, up to the
    // headroom (the capacity again), then skipped.
    p.send(e.next().unwrap()).await;
    assert_eq!((stuck.queued(), stuck.lag.skipped()), (2, 1));
    p.send(e.next().unwrap()).await;
    assert_eq!((stuck.queued(), stuck.lag.skipped()), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn a_batch_larger_than_the_queues_is_queued_in_order_for_every_sink() {
    let a = Fake::new("a", Answer::Slow(Duration::from_millis(10)));
    let b = Fake::new("b", Answer::Slow(Duration::from_millis(30)));
    let (seen_a, seen_b) = (a.seen(), b.seen());
    // Queues of 4: the batch of 25 waits for room three times over.
    let p = pipeline(vec![("a", a, 4, 3), ("b", b, 4, 2)]);
    let sent = entries(25);
    let order: Vec<String> = sent.iter().map(uid).collect();
    p.send_batch(sent).await;
    p.send_batch(Vec::new()).await;
    let report = p.shutdown(Duration::from_secs(30)).await;

    assert_eq!(report.undelivered, vec![]);
    for seen in [seen_a, seen_b] {
        let seen = seen.lock().unwrap();
        let delivered: Vec<String> = seen.calls.iter().flatten().cloned().collect();
        assert_eq!(delivered, order);
    }
    assert_eq!(report.reports[0].delivered, 25);
    assert_eq!(report.reports[1].delivered, 25);
}
