//! kubesink sink for chat and webhook receivers: routes with match and
//! drop rules, a minijinja template per route, ready formats for Slack,
//! DingTalk (signed URLs), Feishu/Lark (signed bodies), WeChat Work,
//! Microsoft Teams and generic JSON, batching, retries honouring
//! `Retry-After`, an idempotency key per message and a rate limit per
//! route. Requests go through the host's `wasi:http` (world
//! `http-sink-world`), so every receiver must be in the sink's
//! `allow_hosts`.
//!
//! Build: `cargo build --target wasm32-wasip2 --profile guest -p kubesink-sink-webhook`.
//! Settings, formats and the vendors' documents: `README.md` beside this
//! crate.

#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings;
pub mod format;
pub mod record;
pub mod render;
pub mod rules;
pub mod settings;
pub mod sink;
pub mod transport;

// wit-bindgen's export glue uses `unsafe` (canonical ABI).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component;

pub use settings::{Config, SettingsError};
pub use sink::{SinkError, WebhookSink};
