//! Hands the host's records (`kubesink_normalize::record`, the WIT types the
//! runtime gives a wasm sink) to the mysql sink's native model
//! (`kubesink_sink_mysql::model`) the way its wasm adapter does with the
//! batch of `write`: borrowed as `kubesink-packed`'s types, then
//! [`Entry::from_packed`](kubesink_sink_mysql::Entry::from_packed), every
//! string borrowed.

use kubesink_normalize::record as host;
use kubesink_sink_mysql as sink;

kubesink_packed::impl_from_wit!(kubesink_normalize::record::kubesink::sink::types);

/// `b` as the native sink's model, borrowing its strings.
pub fn batch(b: &[host::Entry]) -> Vec<sink::Entry<'_>> {
    packed_batch(b)
        .iter()
        .map(sink::Entry::from_packed)
        .collect()
}
