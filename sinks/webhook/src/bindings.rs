//! wit-bindgen bindings for `http-sink-world` (`wit/http-sink.wit`): the
//! record types, the `sink` export, and the `wasi:http` imports. Generated on
//! every target so the pure parts of the sink are unit-tested natively with
//! the same types (imports are only callable inside a component).

wit_bindgen::generate!({
    path: "../../wit",
    world: "http-sink-world",
    generate_all,
});
