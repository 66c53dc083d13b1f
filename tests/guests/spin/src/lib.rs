//! Hostile test guest `spin`: `init` succeeds, `write` loops forever without
//! calling the host. The host's epoch deadline must stop it.

// wit-bindgen's generated canonical-ABI glue (exports, lifting, lowering)
// is unsafe code by nature; nothing hand-written here is.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "sink-world" });

    use super::Spin;
    export!(Spin);
}

use bindings::exports::kubesink::sink::sink::Guest;
use bindings::kubesink::sink::types::{Entry, Error, RecordKind};

struct Spin;

impl Guest for Spin {
    fn init(_settings: Vec<(String, String)>) -> Result<(), Error> {
        Ok(())
    }

    fn held(_kind: RecordKind) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }

    fn write(batch: Vec<Entry>) -> Result<(), Error> {
        let mut n: u64 = batch.len() as u64;
        loop {
            n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}
