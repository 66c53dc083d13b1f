//! Hostile test guest `crash`: `init` succeeds, `write` panics (a trap: the
//! guest profile aborts on panic). The message goes to stderr first.

// wit-bindgen's generated canonical-ABI glue (exports, lifting, lowering)
// is unsafe code by nature; nothing hand-written here is.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "sink-world" });

    use super::Crash;
    export!(Crash);
}

use bindings::exports::kubesink::sink::sink::Guest;
use bindings::kubesink::sink::types::{Change, Error, HeldPage, RecordKind, Shape, Wants};

struct Crash;

impl Guest for Crash {
    fn init(_settings: Vec<(String, String)>) -> Result<Wants, Error> {
        Ok(Wants {
            kinds: Vec::new(),
            shape: Shape::Log,
            fields: Vec::new(),
        })
    }

    fn held(_kind: RecordKind, _cursor: Option<String>, _limit: u32) -> Result<HeldPage, Error> {
        Ok(HeldPage {
            uids: Vec::new(),
            next: None,
        })
    }

    fn write(batch: Vec<Change>) -> Result<(), Error> {
        panic!(
            "crash guest: deliberate panic on a batch of {}",
            batch.len()
        );
    }
}
