//! How many HTTP requests a sink may have in flight at once
//! ([`crate::Limits::http_max_in_flight`]): one semaphore per sink, kept by
//! the host by sink name so that all its instances count together.

use std::sync::Arc;

/// A sink's HTTP request slots: how many of its requests may be in flight
/// at once ([`crate::Limits::http_max_in_flight`]), shared by all its instances.
#[derive(Debug, Clone)]
pub(crate) struct SinkSlots {
    pub(super) slots: Arc<tokio::sync::Semaphore>,
    pub(super) limit: usize,
}

impl SinkSlots {
    /// `limit` slots.
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(limit)),
            limit,
        }
    }
}

/// The host's [`SinkSlots`], by sink name.
#[derive(Debug, Default)]
pub(crate) struct InFlightSlots {
    by_name: std::sync::Mutex<std::collections::HashMap<String, SinkSlots>>,
}

impl InFlightSlots {
    /// The slots of sink `sink` (created with `limit` on first use, or anew
    /// when the limit changed).
    pub fn get(&self, sink: &str, limit: usize) -> SinkSlots {
        let mut map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(sink) {
            Some(s) if s.limit == limit => s.clone(),
            _ => {
                let s = SinkSlots::new(limit);
                map.insert(sink.to_owned(), s.clone());
                s
            }
        }
    }
}
