//! Hostile test guest `balloon`: `init` succeeds, `write` allocates 1 MiB
//! blocks (and touches them) without end. The host's memory cap must stop it.

kubesink_guest_common::sink_world!(Balloon);

use bindings::exports::kubesink::sink::sink::Guest;
use bindings::kubesink::sink::types::{Change, Error, HeldPage, RecordKind, Shape, Wants};

struct Balloon;

impl Guest for Balloon {
    kubesink_guest_common::stateless_init!();

    kubesink_guest_common::nothing_held!();

    fn write(_batch: Vec<Change>) -> Result<(), Error> {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            let block = vec![0xA5u8; 1 << 20];
            blocks.push(std::hint::black_box(block));
        }
    }
}
