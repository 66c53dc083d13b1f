//! sls sink (work in progress).
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings;
pub mod proto;
pub mod settings;
pub mod sign;
