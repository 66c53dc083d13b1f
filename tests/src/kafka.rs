//! A real Apache Kafka broker for tests, and a real consumer reading back
//! what was produced.
//!
//! The shared broker comes from `KUBESINK_TEST_KAFKA_BROKERS` (`host:port`).
//! When that variable is unset, `tests/scripts/kafka.sh start` is run once
//! per process: it fetches the broker's jars from Maven Central (cached by
//! version), formats a single-node KRaft log dir, starts the broker on
//! 127.0.0.1:19092 unless one answers already, and prints the address. If
//! the broker cannot be had, every test that asks for it fails with the
//! script's output.
//!
//! A test that stops the broker (an outage) starts its own [`PrivateKafka`]
//! instead: the same script on another port and data dir, stopped with
//! SIGTERM (a clean shutdown) and started again on the same data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The environment variable naming the shared test broker (`host:port`).
pub const BROKERS_ENV: &str = "KUBESINK_TEST_KAFKA_BROKERS";

fn script() -> PathBuf {
    crate::guests::workspace_root().join("tests/scripts/kafka.sh")
}

/// Runs `kafka.sh <cmd>` with `env`; returns its stdout, or fails with
/// its whole output.
fn run_script(cmd: &str, env: &[(&str, String)]) -> anyhow::Result<String> {
    let script = script();
    let mut c = Command::new("bash");
    c.arg(&script).arg(cmd);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{} {cmd} failed ({}); its output:\n{}{stdout}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

fn brokers_line(stdout: &str) -> anyhow::Result<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{BROKERS_ENV}=")))
        .map(str::to_owned)
        .with_context(|| format!("kafka.sh printed no {BROKERS_ENV}= line: {stdout}"))
}

/// The shared test broker's address, starting it if needed (see the
/// module docs).
pub fn brokers() -> anyhow::Result<String> {
    static BROKERS: OnceLock<Result<String, String>> = OnceLock::new();
    BROKERS
        .get_or_init(|| match std::env::var(BROKERS_ENV) {
            Ok(b) if !b.trim().is_empty() => Ok(b.trim().to_owned()),
            _ => run_script("start", &[])
                .and_then(|out| brokers_line(&out))
                .map_err(|e| format!("{e:#}")),
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A broker of one test's own, on a free port (and the next one for its
/// controller), its data under a temporary directory. Stopped when dropped.
#[derive(Debug)]
pub struct PrivateKafka {
    port: u16,
    run: tempfile::TempDir,
}

impl PrivateKafka {
    /// Starts a broker on two free ports of 127.0.0.1 (the broker's and,
    /// next to it, its controller's).
    pub fn start() -> anyhow::Result<Self> {
        let run = tempfile::Builder::new().prefix("kafka-").tempdir()?;
        let me = Self {
            port: free_port_pair()?,
            run,
        };
        me.start_again()?;
        Ok(me)
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KUBESINK_TEST_KAFKA_PORT", self.port.to_string()),
            ("KUBESINK_KAFKA_RUN", self.run.path().display().to_string()),
        ]
    }

    /// `127.0.0.1:PORT`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its data, config and log directory.
    pub fn dir(&self) -> &Path {
        self.run.path()
    }

    /// Stops it cleanly (SIGTERM, waits for the process to end); the data
    /// stays.
    pub fn stop(&self) -> anyhow::Result<()> {
        run_script("stop", &self.env()).map(drop)
    }

    /// Starts it again on the same data; returns once it serves.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let out = run_script("start", &self.env())?;
        let got = brokers_line(&out)?;
        anyhow::ensure!(
            got == self.brokers(),
            "started {got}, not {}",
            self.brokers()
        );
        Ok(())
    }
}

/// A port `p` such that `p` and `p + 1` are free on 127.0.0.1 now.
fn free_port_pair() -> anyhow::Result<u16> {
    use std::net::TcpListener;
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let Some(next) = first.checked_add(1) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", first)).is_ok()
            && TcpListener::bind(("127.0.0.1", next)).is_ok()
        {
            return Ok(first);
        }
    }
    bail!("no two adjacent free ports on 127.0.0.1")
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = run_script("stop", &self.env());
    }
}

/// One message read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Vec<u8>,
    /// Its headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Every message of `topic` on `brokers`, read by a real consumer from the
/// beginning of each partition up to its high watermark (the end at the
/// time of the call), ordered by partition and offset; none for a topic
/// that does not exist. Fails when the end is not reached within `limit`.
pub fn read_topic(brokers: &str, topic: &str, limit: Duration) -> anyhow::Result<Vec<Got>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("kubesink-test-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        .create()
        .context("creating the test consumer")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("metadata of topic {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        // Never produced to: the broker creates topics on first use.
        return Ok(Vec::new());
    }
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        if high > low {
            ends.insert(p, high);
            assignment.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut done: HashMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
    while done.values().any(|d| !d) {
        if Instant::now() >= deadline {
            bail!(
                "read {} messages of topic {topic}, not all up to {ends:?} within {limit:?}",
                got.len()
            );
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.with_context(|| format!("consuming {topic}"))?;
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        if m.offset() + 1 >= ends[&m.partition()] {
            done.insert(m.partition(), true);
        }
        got.push(Got {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    got.sort_by_key(|g| (g.partition, g.offset));
    Ok(got)
}
