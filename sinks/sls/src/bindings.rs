//! wit-bindgen bindings for `packed-http-sink-world` (`wit/http-sink.wit`):
//! the record types, the `sink` and `packed` exports, and the `wasi:http`
//! imports. Generated on
//! every target so the pure parts of the sink are unit-tested natively with
//! the same types (imports are only callable inside a component).

wit_bindgen::generate!({
    path: "../../wit",
    world: "packed-http-sink-world",
    generate_all,
});
