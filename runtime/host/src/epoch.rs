//! The epoch ticker: advances the engine's epoch every [`EPOCH_TICK`]
//! while at least one guest call is in flight, and sleeps (parked on a
//! condition variable, no timer) while none is.
//!
//! Epochs are what stop a guest that spins (its call's deadline) and what
//! holds a busy guest to its sink's CPU quota (the store's epoch callback
//! checks both at every tick; see [`crate::instance`] and [`crate::cpu`]).
//! Both only matter while wasm code may run, that is inside a call; an
//! idle kubesink therefore wakes no thread for them. Every call into a
//! guest (instantiate, `init`, `write`, the pages of `held`) holds a
//! [`Ticking`] for its duration; the first one wakes the ticker, the last
//! one to end lets it park again after its current tick.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch ticker advances the engine's epoch while a call is
/// in flight: the resolution of call deadlines and of the CPU quota.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Default)]
struct State {
    /// Calls in flight (live [`Ticking`] guards).
    active: usize,
    /// Set when the ticker is dropped.
    stop: bool,
    /// Ticks so far (for tests and diagnostics).
    ticks: u64,
    /// The ticker waits on the condition variable (no call in flight):
    /// only then does a call need to wake it. Back-to-back calls of a few
    /// microseconds each would otherwise each make a wake-up system call
    /// while the ticker sleeps out its tick.
    parked: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The ticker's handle: lets guest calls run it ([`EpochGate::ticking`]).
/// Cheap to clone; the host and every sink instance hold one, and the
/// thread stops (and is joined) when the last clone is dropped — so the
/// ticker lives as long as anything that may call a guest, whether or not
/// the [`crate::Host`] that started it still does.
#[derive(Debug, Clone)]
pub struct EpochGate {
    shared: Arc<Shared>,
    _thread: Arc<Thread>,
}

impl EpochGate {
    /// Starts the ticker thread, parked until the first call.
    pub(crate) fn start(engine: Engine) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kubesink-epoch".into())
            .spawn(move || run(&engine, &theirs))?;
        Ok(Self {
            _thread: Arc::new(Thread {
                shared: shared.clone(),
                thread: Some(thread),
            }),
            shared,
        })
    }

    /// Marks a guest call in flight until the guard is dropped: the ticker
    /// runs while any such guard lives.
    pub fn ticking(&self) -> Ticking {
        let mut state = self.shared.lock();
        state.active += 1;
        if state.active == 1 && state.parked {
            self.shared.wake.notify_one();
        }
        Ticking {
            shared: self.shared.clone(),
        }
    }

    /// Epoch ticks so far.
    pub fn ticks(&self) -> u64 {
        self.shared.lock().ticks
    }

    /// Guest calls in flight now.
    pub fn active(&self) -> usize {
        self.shared.lock().active
    }

    /// A probe that tells, even after every gate is gone, whether the
    /// ticker thread was told to stop.
    pub fn stopped_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || shared.lock().stop
    }
}

/// One guest call in flight ([`EpochGate::ticking`]).
#[derive(Debug)]
#[must_use = "the ticker runs only while the guard lives"]
pub struct Ticking {
    shared: Arc<Shared>,
}

impl Drop for Ticking {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.active = state.active.saturating_sub(1);
    }
}

/// The ticker thread; stopped and joined when the last gate is dropped.
#[derive(Debug)]
struct Thread {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn run(engine: &Engine, shared: &Shared) {
    loop {
        {
            let mut state = shared.lock();
            while state.active == 0 && !state.stop {
                state.parked = true;
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                state.parked = false;
            }
            if state.stop {
                return;
            }
        }
        std::thread::sleep(EPOCH_TICK);
        engine.increment_epoch();
        shared.lock().ticks += 1;
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        Engine::new(&config).expect("engine")
    }

    /// Waits (polling the tick counter) until `gate` has ticked `n` times
    /// past `from`; fails after 5 s.
    fn wait_ticks(gate: &EpochGate, from: u64, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let t = gate.ticks();
            if t >= from + n {
                return t;
            }
            assert!(Instant::now() < deadline, "ticker stuck at {t} ticks");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn ticks_only_while_a_call_is_in_flight() {
        let gate = EpochGate::start(engine()).expect("ticker");
        // Parked from the start: no call yet. Observed over 10 ticks' time.
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(gate.ticks(), 0, "ticked with no call in flight");

        let a = gate.ticking();
        let b = gate.ticking();
        assert_eq!(gate.active(), 2);
        let t = wait_ticks(&gate, 0, 3);
        drop(a);
        // One call still in flight: it keeps ticking.
        wait_ticks(&gate, t, 2);
        drop(b);
        assert_eq!(gate.active(), 0);
        // At most the tick already under way completes; then it parks.
        let parked = gate.ticks();
        std::thread::sleep(EPOCH_TICK * 10);
        assert!(
            gate.ticks() <= parked + 1,
            "kept ticking after the last call: {parked} -> {}",
            gate.ticks()
        );

        // And wakes again for the next call.
        let c = gate.ticking();
        wait_ticks(&gate, gate.ticks(), 2);
        drop(c);
    }

    #[test]
    fn the_thread_lives_while_any_gate_does_and_stops_with_the_last() {
        let host = EpochGate::start(engine()).expect("ticker");
        let stopped = host.stopped_probe();
        let instance = host.clone();
        drop(host); // e.g. the Host dropped while a sink instance lives
        assert!(!stopped(), "stopped while an instance still holds a gate");
        let call = instance.ticking();
        let t = wait_ticks(&instance, 0, 2);
        // The last gate goes during a call: the thread stops anyway (the
        // drop joins it, so it has stopped when `drop` returns).
        let counter = instance.shared.clone();
        drop(instance);
        assert!(stopped());
        let after = counter.lock().ticks;
        assert!(after >= t);
        std::thread::sleep(EPOCH_TICK * 5);
        assert_eq!(counter.lock().ticks, after, "ticked after it stopped");
        drop(call);
    }
}
