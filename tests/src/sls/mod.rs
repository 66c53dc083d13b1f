//! An Alibaba Cloud Simple Log Service (SLS) emulator for tests and demos.
//!
//! It speaks the real wire protocol, checked against the official Python SDK
//! (`tests/sls-conformance/`): PutLogs on `POST /logstores/{ls}/shards/lb`,
//! `/shards/route?key=..` and `/logstores/{ls}`; ListShards, GetCursor and
//! PullLogs to read back. Requests are verified like the service does:
//! signature v1 (401 `SignatureNotMatch`, `InvalidAccessKeyId`,
//! `Unauthorized`), `x-acs-security-token` for STS keys, `Content-MD5`
//! (uppercase hex), `Date` skew (> 15 min: 400 `RequestTimeExpired`), bodies
//! raw or compressed (`x-log-compresstype` `lz4` raw block, `deflate` zlib,
//! `zstd`; `x-log-bodyrawsize`), the 10 MiB raw body and 1 MiB value limits.
//! Errors have SLS's JSON shape `{"errorCode","errorMessage"}` and every
//! response carries `x-log-requestid`.
//!
//! The project comes from the `Host` header, `<project>.<anything>`; with an
//! IP endpoint the official SDK connects to the IP and sends
//! `Host: <project>.<ip>`, which works the same.
//!
//! Tests inject faults ([`Emulator::inject`]: the next N PutLogs get 403
//! `WriteQuotaExceed`, 500, 503 or a delay) and read what was stored
//! directly ([`Emulator::logs`], [`Emulator::requests`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), kubesink_tests::sls::EmulatorError> {
//! use kubesink_tests::sls::{self, EmulatorConfig, Fault};
//! let emu = sls::start(EmulatorConfig::default()).await?;
//! println!("endpoint {}", emu.endpoint()); // http://127.0.0.1:PORT
//! emu.inject(Fault::WriteQuotaExceeded, 2);
//! let logs = emu.logs("kubesink", "events");
//! # Ok(()) }
//! ```

pub mod python_sdk;
mod server;
pub mod sign;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// Binding the listening socket failed.
    #[error("sls emulator: cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// An access key the emulator accepts.
#[derive(Debug, Clone)]
pub struct AccessKey {
    /// `AccessKeyId`.
    pub id: String,
    /// `AccessKeySecret`.
    pub secret: String,
    /// For an STS key: the `x-acs-security-token` requests must carry.
    /// `None`: requests must not carry one.
    pub security_token: Option<String>,
}

/// What the emulator serves: projects, logstores, keys, shards.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Address to listen on; port 0 picks a free one. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Accepted keys. Default: one key `kubesink-test-key` /
    /// `kubesink-test-secret`.
    pub keys: Vec<AccessKey>,
    /// project -> logstores. Default: `kubesink` with `events`.
    pub projects: BTreeMap<String, Vec<String>>,
    /// Shards per logstore (hash range split evenly). Default 2.
    pub shards: u32,
    /// Reject a `Date` more than 15 minutes away from now. Default true.
    pub check_date: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            keys: vec![AccessKey {
                id: "kubesink-test-key".into(),
                secret: "kubesink-test-secret".into(),
                security_token: None,
            }],
            projects: BTreeMap::from([("kubesink".to_string(), vec!["events".to_string()])]),
            shards: 2,
            check_date: true,
        }
    }
}

impl EmulatorConfig {
    /// Replaces the keys with this one.
    #[must_use]
    pub fn key(mut self, id: &str, secret: &str) -> Self {
        self.keys = vec![AccessKey {
            id: id.into(),
            secret: secret.into(),
            security_token: None,
        }];
        self
    }

    /// Adds an STS key that requires `token` in `x-acs-security-token`.
    #[must_use]
    pub fn sts_key(mut self, id: &str, secret: &str, token: &str) -> Self {
        self.keys.push(AccessKey {
            id: id.into(),
            secret: secret.into(),
            security_token: Some(token.into()),
        });
        self
    }

    /// Adds a logstore (and its project when new).
    #[must_use]
    pub fn logstore(mut self, project: &str, logstore: &str) -> Self {
        let stores = self.projects.entry(project.to_string()).or_default();
        if !stores.iter().any(|s| s == logstore) {
            stores.push(logstore.to_string());
        }
        self
    }

    /// Sets the number of shards per logstore (at least 1).
    #[must_use]
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// Sets the listening address.
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }
}

/// A fault for the next PutLogs requests (after their signature checked out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 403 `WriteQuotaExceed`.
    WriteQuotaExceeded,
    /// 500 `InternalServerError`.
    InternalError,
    /// 503 `ServerBusy`.
    ServerBusy,
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Handle the request normally (to let some requests through before a
    /// fault: `inject(Pass, 1); inject(ServerBusy, 1)`).
    Pass,
}

/// One log as stored, with its group's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLog {
    /// The shard it landed in.
    pub shard: u32,
    /// The group's topic ("" when absent).
    pub topic: String,
    /// The group's source ("" when absent).
    pub source: String,
    /// Log time, Unix seconds.
    pub time: u32,
    /// Nanoseconds part, when sent.
    pub time_ns: Option<u32>,
    /// Key/value contents in the order sent.
    pub contents: Vec<(String, String)>,
}

impl StoredLog {
    /// The value of the first content with this key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.contents
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One request as the emulator saw it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string ("" when none).
    pub query: String,
    /// Headers, names lowercase, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Status code answered.
    pub status: u16,
    /// `errorCode` answered, when an error.
    pub error_code: Option<String>,
    /// Body bytes received (as sent, compressed or not).
    pub body_len: usize,
}

impl RequestRecord {
    /// The first header with this (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One stored log group: the protobuf bytes as received (after
/// decompression), which PullLogs returns unchanged and
/// [`StoredGroup::logs`] decodes.
#[derive(Debug, Clone)]
struct StoredGroup {
    raw: Vec<u8>,
    /// The shard it landed in.
    shard: u32,
    /// When it was received, Unix seconds (GetCursor `from=<time>`).
    received: i64,
}

/// Everything the emulator holds, behind one lock.
#[derive(Debug, Default)]
struct Data {
    /// (project, logstore) -> per shard, groups in arrival order.
    stores: BTreeMap<(String, String), Vec<Vec<StoredGroup>>>,
    faults: VecDeque<Fault>,
    requests: Vec<RequestRecord>,
    next_request_id: u64,
    round_robin: u64,
    /// Requests being handled now, and the most at once.
    in_flight: usize,
    most_in_flight: usize,
}

/// State shared by the server tasks and the [`Emulator`] handle.
#[derive(Debug)]
struct State {
    config: EmulatorConfig,
    data: Mutex<Data>,
}

impl State {
    fn data(&self) -> MutexGuard<'_, Data> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running emulator; stops when dropped.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts an emulator on `config.listen` (a free 127.0.0.1 port by default).
pub async fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| EmulatorError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind {
            addr: config.listen,
            source,
        })?;
    let mut stores = BTreeMap::new();
    for (project, logstores) in &config.projects {
        for logstore in logstores {
            stores.insert(
                (project.clone(), logstore.clone()),
                vec![Vec::new(); config.shards.max(1) as usize],
            );
        }
    }
    let state = Arc::new(State {
        config,
        data: Mutex::new(Data {
            stores,
            ..Data::default()
        }),
    });
    let task = tokio::spawn(server::serve(listener, state.clone()));
    Ok(Emulator { addr, state, task })
}

impl Emulator {
    /// `http://127.0.0.1:PORT`: what a client uses as its SLS endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration it serves.
    pub fn config(&self) -> &EmulatorConfig {
        &self.state.config
    }

    /// The next `times` PutLogs requests (that pass authentication) get `fault`.
    /// Faults queue in the order injected.
    pub fn inject(&self, fault: Fault, times: usize) {
        let mut data = self.state.data();
        data.faults.extend(std::iter::repeat_n(fault, times));
    }

    /// Faults injected but not yet used.
    pub fn pending_faults(&self) -> usize {
        self.state.data().faults.len()
    }

    /// Every log stored in a logstore, shard by shard, in arrival order.
    /// Empty for an unknown logstore.
    pub fn logs(&self, project: &str, logstore: &str) -> Vec<StoredLog> {
        let data = self.state.data();
        data.stores
            .get(&(project.to_string(), logstore.to_string()))
            .map(|shards| {
                shards
                    .iter()
                    .flatten()
                    .flat_map(StoredGroup::logs)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of log groups (successful PutLogs) stored in a logstore.
    pub fn group_count(&self, project: &str, logstore: &str) -> usize {
        let data = self.state.data();
        data.stores
            .get(&(project.to_string(), logstore.to_string()))
            .map(|shards| shards.iter().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.data().requests.clone()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        self.state.data().requests.len()
    }

    /// The most requests that were being handled at once (received, not
    /// yet answered) since the start or the last [`Emulator::clear`]: how
    /// concurrent a client was.
    pub fn most_in_flight(&self) -> usize {
        self.state.data().most_in_flight
    }

    /// Forgets stored logs, recorded requests and the most requests in
    /// flight (keeps config and faults).
    pub fn clear(&self) {
        let mut data = self.state.data();
        for shards in data.stores.values_mut() {
            shards.iter_mut().for_each(Vec::clear);
        }
        data.requests.clear();
        data.most_in_flight = data.in_flight;
    }

    /// Stops serving (also done on drop).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
