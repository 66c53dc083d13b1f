//! Asking a sink what it holds (`held`) and reconciling with a listing:
//! every worker delivers its queue first, the answer comes without holding
//! back the source, and nothing queued after the sinks were asked is taken
//! for deleted.

use super::*;

#[tokio::test(start_paused = true)]
async fn held_delivers_the_queue_first_and_joins_every_worker() {
    let mut p = Pipeline::empty(Ops::new());
    let setup = SinkSetup {
        config: worker_config("two", 100),
        records: vec![config::RecordKind::Events],
        queue_capacity: 100,
        coalesce: false,
        checkpoint: false,
    };
    let fakes = vec![
        Some(Fake::new("a", Answer::Slow(Duration::from_secs(1)))),
        Some(Fake::new("b", Answer::Slow(Duration::from_secs(1)))),
    ];
    p.add_sink(setup, fakes, |_| unused_slot());
    for e in entries(20) {
        p.send(e).await;
    }
    let listed = ["e1", "e2"].map(str::to_owned).into_iter().collect();
    let at = Timestamp {
        seconds: 2,
        nanos: 0,
    };
    // Every entry was delivered before the sink was asked: 18 tombstones.
    let p = Arc::new(p);
    assert_eq!(p.reconcile(RecordKind::Event, listed, at).await, 18);
    let r = &p.reports()[0];
    assert_eq!((r.received, r.delivered), (38, 20));
    assert_eq!(p.sinks[0].counters.delivered.load(Ordering::Relaxed), 20);
}

#[tokio::test(start_paused = true)]
async fn a_reconcile_asks_at_once_and_answers_for_what_was_queued_before_it() {
    let fake = Fake::new("slow", Answer::Slow(Duration::from_secs(1)));
    let seen = fake.seen();
    let p = Arc::new(pipeline(vec![("slow", fake, 100, 10)]));
    let mut e = entries(15).into_iter();
    for entry in e.by_ref().take(10) {
        p.send(entry).await;
    }
    let listed: std::collections::HashSet<String> = (0..10).map(|i| format!("e{i}")).collect();
    let at = Timestamp {
        seconds: 2,
        nanos: 0,
    };
    let started = Instant::now();
    let reconciled = p.reconcile(RecordKind::Event, listed, at);
    assert_eq!(started.elapsed(), Duration::ZERO, "asked without waiting");
    // Created after the listing: delivered after the answer, so not taken
    // for deleted although the listing does not have them.
    for entry in e {
        p.send(entry).await;
    }
    assert_eq!(reconciled.await, 0);
    p.shutdown(Duration::from_secs(30)).await;
    assert_eq!(seen.lock().unwrap().delivered.len(), 15);
}

/// A sink whose two workers share one store (a database): a slow worker
/// answers `held` after its write, by when the fast one has delivered an
/// object queued after the listing. That object is in the answer and not
/// in the listing, yet it was not deleted: no tombstone for it (one would
/// mark a live job removed for good, as a CI run of the HA test saw).
#[tokio::test(start_paused = true)]
async fn a_reconcile_takes_nothing_queued_after_it_began_for_deleted() {
    let store: Arc<Mutex<Seen>> = Arc::default();
    let sharing = |origin: &str, answer| Fake {
        seen: store.clone(),
        ..Fake::new(origin, answer)
    };
    let slow = sharing("slow", Answer::Slow(Duration::from_secs(1)));
    let fast = sharing("fast", Answer::Slow(Duration::ZERO));
    let mut p = Pipeline::empty(Ops::new());
    let setup = SinkSetup {
        config: worker_config("db", 10),
        records: vec![config::RecordKind::Events],
        queue_capacity: 100,
        coalesce: false,
        checkpoint: false,
    };
    p.add_sink(setup, vec![Some(slow), Some(fast)], |_| unused_slot());
    let p = Arc::new(p);
    // An object on each worker's lane.
    let on = |lane: usize| {
        entries(64)
            .into_iter()
            .find(|e| super::queue::lane_of(e, 2) == lane)
            .expect("an entry for each lane")
    };
    let (listed_entry, late) = (on(0), on(1));
    let listed: std::collections::HashSet<String> = [uid(&listed_entry)].into();
    p.send(listed_entry).await;
    // The slow worker is writing the listed object (a second).
    tokio::task::yield_now().await;
    let at = Timestamp {
        seconds: 2,
        nanos: 0,
    };
    let reconciled = tokio::spawn(p.reconcile(RecordKind::Event, listed, at));
    // Created after the listing, delivered at once by the fast worker,
    // before the slow one answers from the same store.
    p.send(late.clone()).await;
    assert_eq!(reconciled.await.unwrap(), 0, "nothing taken for deleted");
    p.shutdown(Duration::from_secs(30)).await;
    let store = store.lock().unwrap();
    assert_eq!(store.delivered.get(&uid(&late)), Some(&1), "{store:?}");
    assert_eq!(store.calls.len(), 2, "no tombstone written: {store:?}");
    // Queued after the reconciliation ended: noted no more.
    assert!(!p.sinks[0].recent.begin().queued_since(2, &uid(&late)));
}

#[tokio::test(start_paused = true)]
async fn a_sink_without_a_module_yet_answers_held_once_loaded_without_falling_behind() {
    let mut p = Pipeline::empty(Ops::new());
    let setup = SinkSetup {
        config: worker_config("late", 100),
        records: vec![config::RecordKind::Events],
        queue_capacity: 100,
        coalesce: false,
        checkpoint: false,
    };
    let mut swaps = Vec::new();
    p.add_sink(setup, vec![None::<Fake>], |tx| {
        swaps.push(tx);
        unused_slot()
    });
    let p = Arc::new(p);
    let _catch_ups = p.enable_catch_up();
    for e in entries(5) {
        p.send(e).await;
    }
    let listed = (0..5).map(|i| format!("e{i}")).collect();
    let at = Timestamp {
        seconds: 2,
        nanos: 0,
    };
    let reconciled = tokio::spawn(p.reconcile(RecordKind::Event, listed, at));
    // Three deadlines pass with no module: nobody waited, nothing is lost.
    tokio::time::sleep(HeldLimits::default().deadline * 3).await;
    assert_eq!(p.lag_state("late"), Some(LagState::Ok));
    let fake = Fake::new("late", Answer::Slow(Duration::from_millis(10)));
    let seen = fake.seen();
    let (reply, loaded) = oneshot::channel();
    swaps[0]
        .send(Swap {
            instance: fake,
            reply,
        })
        .await
        .unwrap();
    loaded.await.unwrap();
    assert_eq!(reconciled.await.unwrap(), 0);
    assert_eq!(p.lag_state("late"), Some(LagState::Ok), "no catch-up owed");
    p.shutdown(Duration::from_secs(30)).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.delivered.len(), 5);
    assert!(
        seen.delivered.values().all(|&n| n == 1),
        "{:?}",
        seen.delivered
    );
}
