//! Hostile test guest `hoarder`: holds host resources without giving them
//! back. `write` opens the sql connection `main` again and again and keeps
//! every handle, `count` times (setting; default: without end), then
//! returns ok. The host's cap on resource handles (`limits.max_resources`)
//! must stop it before the host's memory does.

// wit-bindgen's generated canonical-ABI glue (exports, lifting, lowering)
// is unsafe code by nature; nothing hand-written here is.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "sink-world" });

    use super::Hoarder;
    export!(Hoarder);
}

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
        for _ in 0..COUNT.get() {
            let conn =
                Connection::open("main").map_err(|e| Error::Fatal(format!("open main: {e:?}")))?;
            HELD.with_borrow_mut(|held| held.push(conn));
        }
        Ok(())
    }
}
