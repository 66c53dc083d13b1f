//! wit-bindgen bindings for `kafka-sink-world` (`wit/kafka-sink.wit`): the
//! record types, the `sink` export and the `kafka` import. Generated on
//! every target so the pure parts of the sink are unit-tested natively with
//! the same types (imports are only callable inside a component).

wit_bindgen::generate!({
    path: "../../wit",
    world: "kafka-sink-world",
    generate_all,
});
