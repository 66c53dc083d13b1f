//! The one place that runs `wasmtime::component::bindgen!` for the sink
//! world. Record types come from [`kubesink_normalize::record`].

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "sink-world",
    imports: { default: async | trappable },
    exports: { default: async },
    // `value`, `statement` and `sql-error` compare in tests and callers.
    additional_derives: [PartialEq],
    with: {
        "kubesink:sink/types": kubesink_normalize::record::kubesink::sink::types,
        "kubesink:sink/sql.connection": crate::sql::Connection,
    },
});
