//! The wasm export: the `sink` interface of `kafka-sink-world`, each
//! topic's messages produced through the host's `kafka.produce`.

use std::cell::RefCell;

use crate::bindings::exports::kubesink::sink::sink::Guest;
use crate::bindings::kubesink::sink::kafka::{self, KafkaError, Message};
use crate::bindings::kubesink::sink::types::{
    Change, Error, HeldPage, OptionalField, RecordKind, Shape, Wants,
};
use crate::settings::Settings;
use crate::sink::{KafkaSink, Produce};

thread_local! {
    static SINK: RefCell<Option<KafkaSink>> = const { RefCell::new(None) };
}

/// The host's producers.
struct Host;

impl Produce for Host {
    fn produce(
        &mut self,
        producer: &str,
        topic: &str,
        messages: &[Message],
    ) -> Result<(), KafkaError> {
        kafka::produce(producer, topic, messages)
    }
}

struct Component;

impl Guest for Component {
    fn init(settings: Vec<(String, String)>) -> Result<Wants, Error> {
        let settings = Settings::parse(&settings).map_err(|e| Error::Fatal(e.to_string()))?;
        let kinds = settings.kinds();
        SINK.with(|s| *s.borrow_mut() = Some(KafkaSink::new(settings)));
        Ok(Wants {
            kinds,
            // Every update is a message.
            shape: Shape::Log,
            fields: vec![
                OptionalField::Labels,
                OptionalField::Resources,
                OptionalField::Messages,
            ],
        })
    }

    /// A log: holds nothing the host needs to reconcile.
    fn held(_kind: RecordKind, _cursor: Option<String>, _limit: u32) -> Result<HeldPage, Error> {
        Ok(HeldPage {
            uids: Vec::new(),
            next: None,
        })
    }

    fn write(batch: Vec<Change>) -> Result<(), Error> {
        SINK.with(|s| match s.borrow().as_ref() {
            Some(sink) => sink.write(&mut Host, &batch),
            None => Err(Error::Fatal("kafka sink: write before init".into())),
        })
    }
}

crate::bindings::export!(Component with_types_in crate::bindings);
