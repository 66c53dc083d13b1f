//! What the test guests in `tests/guests/` share, as macros expanded in
//! each guest (so that names resolve there, against the guest's own
//! bindings, whichever world it is built for):
//!
//! - [`sink_world!`]: the `sink-world` bindings of a guest, exporting its
//!   type;
//! - [`log_wants!`]: the `wants` of a sink that keeps no state (shape
//!   `log`, every kind, every field);
//! - [`stateless_init!`]: an `init` that ignores its settings and returns
//!   [`log_wants!`];
//! - [`nothing_held!`]: a `held` that reports no uid (what a sink that
//!   keeps no state answers).
//!
//! The guest must have `wit-bindgen` as a dependency and, for the last
//! three, `Error`, `HeldPage`, `RecordKind`, `Shape` and `Wants` of its
//! bindings in scope.
#![no_std]

/// `mod bindings`: the `sink-world` bindings (from the repository's `wit/`,
/// three levels above the guest's manifest), exporting `$guest`.
#[macro_export]
macro_rules! sink_world {
    ($guest:ident) => {
        // wit-bindgen's generated canonical-ABI glue (exports, lifting,
        // lowering) is unsafe code by nature; nothing hand-written is.
        #[allow(unsafe_code)]
        mod bindings {
            wit_bindgen::generate!({ path: "../../../wit", world: "sink-world" });

            use super::$guest;
            export!($guest);
        }
    };
}

/// The `wants` of a sink that keeps no state: shape `log`, every record
/// kind, every field.
#[macro_export]
macro_rules! log_wants {
    () => {
        Wants {
            kinds: Vec::new(),
            shape: Shape::Log,
            fields: Vec::new(),
        }
    };
}

/// `fn init`, for an `impl Guest`: ignores the settings, returns
/// [`log_wants!`].
#[macro_export]
macro_rules! stateless_init {
    () => {
        fn init(_settings: Vec<(String, String)>) -> Result<Wants, Error> {
            Ok($crate::log_wants!())
        }
    };
}

/// `fn held`, for an `impl Guest`: no uid is held.
#[macro_export]
macro_rules! nothing_held {
    () => {
        fn held(
            _kind: RecordKind,
            _cursor: Option<String>,
            _limit: u32,
        ) -> Result<HeldPage, Error> {
            Ok(HeldPage {
                uids: Vec::new(),
                next: None,
            })
        }
    };
}
