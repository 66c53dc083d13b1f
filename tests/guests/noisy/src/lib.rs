//! Hostile test guest `noisy`: every `write` prints `lines` lines (setting,
//! default 100000) of about 100 bytes to stdout and some to stderr, then
//! succeeds. The host must rate-limit what reaches its log.

kubesink_guest_common::sink_world!(Noisy);

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
        Ok(kubesink_guest_common::log_wants!())
    }

    kubesink_guest_common::nothing_held!();

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
