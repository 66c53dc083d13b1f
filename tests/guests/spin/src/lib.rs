//! Hostile test guest `spin`: `init` succeeds, `write` computes without
//! calling the host.
//!
//! Settings: none — `write` loops forever (the host's epoch deadline must
//! stop it); `spin_ms=N` — `write` computes flat out for N ms of wall time
//! (read from the WASI clock, so pauses the host imposes count) and returns
//! ok: a sink that uses its CPU call after call (the CPU quota test).

kubesink_guest_common::sink_world!(Spin);

use std::cell::Cell;
use std::time::{Duration, Instant};

use bindings::exports::kubesink::sink::sink::Guest;
use bindings::kubesink::sink::types::{Change, Error, HeldPage, RecordKind, Shape, Wants};

thread_local! {
    /// `spin_ms`, if set.
    static SPIN_FOR: Cell<Option<Duration>> = const { Cell::new(None) };
}

struct Spin;

impl Guest for Spin {
    fn init(settings: Vec<(String, String)>) -> Result<Wants, Error> {
        for (k, v) in settings {
            match k.as_str() {
                "spin_ms" => {
                    let ms: u64 = v
                        .parse()
                        .map_err(|_| Error::Fatal(format!("spin_ms: `{v}` is not a number")))?;
                    SPIN_FOR.set(Some(Duration::from_millis(ms)));
                }
                other => return Err(Error::Fatal(format!("unknown setting {other}"))),
            }
        }
        Ok(kubesink_guest_common::log_wants!())
    }

    kubesink_guest_common::nothing_held!();

    fn write(batch: Vec<Change>) -> Result<(), Error> {
        let mut n: u64 = batch.len() as u64;
        let Some(spin_for) = SPIN_FOR.get() else {
            loop {
                n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        };
        let start = Instant::now();
        while start.elapsed() < spin_for {
            // A few thousand steps between clock reads: mostly computing.
            for _ in 0..10_000 {
                n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        std::hint::black_box(n);
        Ok(())
    }
}
