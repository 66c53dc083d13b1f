//! Hostile test guest `crash`: `init` succeeds, `write` panics (a trap: the
//! guest profile aborts on panic). The message goes to stderr first.

kubesink_guest_common::sink_world!(Crash);

use bindings::exports::kubesink::sink::sink::Guest;
use bindings::kubesink::sink::types::{Change, Error, HeldPage, RecordKind, Shape, Wants};

struct Crash;

impl Guest for Crash {
    kubesink_guest_common::stateless_init!();

    kubesink_guest_common::nothing_held!();

    fn write(batch: Vec<Change>) -> Result<(), Error> {
        panic!(
            "crash guest: deliberate panic on a batch of {}",
            batch.len()
        );
    }
}
