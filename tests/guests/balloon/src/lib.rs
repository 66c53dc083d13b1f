//! Hostile test guest `balloon`: `init` succeeds, `write` allocates 1 MiB
//! blocks (and touches them) without end. The host's memory cap must stop it.

// wit-bindgen's generated canonical-ABI glue (exports, lifting, lowering)
// is unsafe code by nature; nothing hand-written here is.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "sink-world" });

    use super::Balloon;
    export!(Balloon);
}

use bindings::exports::kubesink::sink::sink::Guest;
use bindings::kubesink::sink::types::{Change, Error, HeldPage, RecordKind, Shape, Wants};

struct Balloon;

impl Guest for Balloon {
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

    fn write(_batch: Vec<Change>) -> Result<(), Error> {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            let block = vec![0xA5u8; 1 << 20];
            blocks.push(std::hint::black_box(block));
        }
    }
}
