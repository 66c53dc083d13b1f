//! kubesink sink for Alibaba Cloud Simple Log Service (SLS): each batch
//! becomes PutLogs requests, sent through the host's `wasi:http`
//! (`wit/http-sink.wit`, world `http-sink-world`), so the sink needs the SLS
//! endpoint in its HTTP allow-list.
//!
//! Build: `cargo build --target wasm32-wasip2 --profile guest -p kubesink-sink-sls`
//! (`target/wasm32-wasip2/guest/kubesink_sink_sls.wasm`).
//!
//! # Settings
//!
//! | key | meaning |
//! | --- | --- |
//! | `endpoint` | required: `cn-hangzhou.log.aliyuncs.com` (https) or `http://127.0.0.1:9000` (scheme, optional port) |
//! | `project` | required: SLS project |
//! | `logstore` | required: logstore events (and jobs/pods) go to |
//! | `access_key_id` | required |
//! | `access_key_secret` | required; never logged or put in errors |
//! | `security_token` | optional STS token (`x-acs-security-token`) |
//! | `topic` | topic of event logs, default "" (KubeDL's) |
//! | `events` | `true` (default) / `false`: write events |
//! | `jobs_topic` | when set, jobs are written too, under this topic |
//! | `pods_topic` | when set, pods are written too, under this topic |
//! | `max_body_bytes` | most raw bytes per PutLogs, 64 KiB..=10 MiB, default 10 MiB |
//! | `max_logs_per_request` | 1..=4096, default 4096 |
//! | `compression` | `lz4` (default, raw LZ4 block) or `none` |
//! | `max_in_flight` | most PutLogs requests of one batch outstanding at once, 1..=64, default 8 |
//!
//! Any other key is a fatal `init` error naming it.
//!
//! # Requests
//!
//! PutLogs `POST /logstores/{logstore}/shards/lb` with a protobuf LogGroup
//! ([`proto`]), `Content-MD5` (uppercase hex of the bytes sent),
//! `x-log-bodyrawsize`, `x-log-compresstype: lz4`, `Date`, and signature v1
//! ([`sign`]). The connection goes to `<project>.<endpoint host>`; for an
//! IPv4 endpoint it goes to the IP, and `Host: <project>.<ip>` names the
//! project, as the official SDK does ([`settings::Endpoint`]). A batch's
//! requests go out concurrently, at most `max_in_flight` at once; after a
//! failure no more are started ([`sink`]).
//!
//! Events map to KubeDL's keys ([`mapping`]). Errors ([`sink::check_response`]):
//! 403 quota, 429, 5xx and network failures are `retryable`; 400, 401, 404,
//! 413, other statuses and a request the host denied are `fatal`.

#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings;
pub mod mapping;
pub mod proto;
pub mod settings;
pub mod sign;
pub mod sink;

// wit-bindgen's export glue uses `unsafe` (canonical ABI).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component;

pub use settings::{Endpoint, Settings, SettingsError};
pub use sink::{SinkError, SlsSink};
