//! Normalized records: the types of the WIT interface `kubesink:sink/types`,
//! generated here once and reused by the host's bindings (`with:`), so a
//! record built by [`crate::normalize`] is handed to a sink without copying
//! into another type.

wasmtime::component::bindgen!({
    inline: "
        package kubesink:records;
        world records { import kubesink:sink/types@0.1.0; }
    ",
    path: "../../wit",
    additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
});

pub use kubesink::sink::types::{
    Change, Entry, Error as SinkError, Event, Job, Meta, ObjectRef, Pod, Record, RecordKind,
    Timestamp,
};
