//! Hostile test guest `hoarder`: holds host resources without giving them
//! back. `write` opens the sql connection `main` again and again and keeps
//! every handle, `count` times (setting; default: without end), then
//! returns ok. The host's cap on resource handles (`limits.max_resources`)
//! must stop it before the host's memory does.

kubesink_guest_common::sink_world!(Hoarder);

use std::cell::{Cell, RefCell};

use bindings::exports::kubesink::sink::sink::Guest;
use bindings::kubesink::sink::sql::Connection;
use bindings::kubesink::sink::types::{Change, Error, HeldPage, RecordKind, Shape, Wants};

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(u64::MAX) };
    static HELD: RefCell<Vec<Connection>> = const { RefCell::new(Vec::new()) };
}

struct Hoarder;

impl Guest for Hoarder {
    fn init(settings: Vec<(String, String)>) -> Result<Wants, Error> {
        for (k, v) in settings {
            match k.as_str() {
                "count" => COUNT.set(
                    v.parse()
                        .map_err(|_| Error::Fatal(format!("count: `{v}` is not a number")))?,
                ),
                other => return Err(Error::Fatal(format!("unknown setting {other}"))),
            }
        }
        Ok(kubesink_guest_common::log_wants!())
    }

    kubesink_guest_common::nothing_held!();

    fn write(_batch: Vec<Change>) -> Result<(), Error> {
        for _ in 0..COUNT.get() {
            let conn =
                Connection::open("main").map_err(|e| Error::Fatal(format!("open main: {e:?}")))?;
            HELD.with_borrow_mut(|held| held.push(conn));
        }
        Ok(())
    }
}
