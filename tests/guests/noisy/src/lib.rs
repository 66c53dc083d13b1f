//! Hostile test guest `noisy`: every `write` prints `lines` lines (setting,
//! default 100000) of about 100 bytes to stdout and some to stderr, then
//! succeeds. The host must rate-limit what reaches its log.

// wit-bindgen's generated canonical-ABI glue (exports, lifting, lowering)
// is unsafe code by nature; nothing hand-written here is.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "sink-world" });

    use super::Noisy;
    export!(Noisy);
}

use std::cell::Cell;
use std::io::Write;

use bindings::exports::kubesink::sink::sink::Guest;
use bindings::kubesink::sink::types::{Change, Error, HeldPage, RecordKind, Shape, Wants};

thread_local! {
    static LINES: Cell<u64> = const { Cell::new(100_000) };
}

struct Noisy;

impl Guest for Noisy {
    fn init(settings: Vec<(String, String)>) -> Result<Wants, Error> {
        for (k, v) in settings {
            match k.as_str() {
                "lines" => {
                    let n = v
                        .parse()
                        .map_err(|e| Error::Fatal(format!("setting lines={v}: {e}")))?;
                    LINES.set(n);
                }
                other => return Err(Error::Fatal(format!("unknown setting {other}"))),
            }
        }
        println!("noisy guest ready");
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
        let mut out = std::io::stdout().lock();
        for i in 0..LINES.get() {
            // Errors writing to the log are not the guest's business.
            let _ = writeln!(
                out,
                "noisy line {i:>8} of a batch of {:>4} entries ...........................................",
                batch.len()
            );
        }
        eprintln!("noisy guest wrote {} lines", LINES.get());
        Ok(())
    }
}
