//! The sls sink into the SLS emulator: the events of the data set, in
//! batches of [`BATCH`], through the real host and the sls component;
//! events/s and raw (uncompressed protobuf) MB/s, checked against what the
//! emulator stored. `BENCH_SLS_MAX_IN_FLIGHT` sets the sink's
//! `max_in_flight` (default: the sink's).

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use kubesink_host::{Host, HostOptions, Limits, ModuleSource, SinkSpec};
use kubesink_normalize::record::{Entry, Record};
use kubesink_tests::sls::{self, EmulatorConfig};

/// Events per `write`.
pub const BATCH: usize = 1000;

/// What the run measured.
#[derive(Debug, Clone, Copy)]
pub struct SlsThroughput {
    /// Events delivered.
    pub events: u64,
    /// Raw bytes (`x-log-bodyrawsize` summed).
    pub raw_bytes: u64,
    /// Bytes on the wire (lz4).
    pub wire_bytes: u64,
    /// PutLogs requests.
    pub requests: usize,
    /// Time spent in writes.
    pub elapsed: Duration,
    /// CPU the sink's calls used in those writes (their polls: wasm code,
    /// lowering, lifting and host calls that complete at once; not the
    /// waits: `SinkStats::guest_cpu`).
    pub guest_cpu: Duration,
    /// CPU (user + system) of the whole process over the writes: the guest,
    /// the host's HTTP client and the emulator.
    pub process_cpu: Duration,
}

impl SlsThroughput {
    /// Events per second.
    #[must_use]
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The report's note: what was sent, and where the CPU went.
    #[must_use]
    pub fn note(&self) -> String {
        let per_event = |d: Duration| d.as_secs_f64() * 1e6 / self.events.max(1) as f64;
        format!(
            "{} events in batches of {BATCH}; {} PutLogs; raw {:.1} MB, lz4 {:.1} MB; emulator in the same process; \
             CPU per event: the sink's guest {:.2} µs, the whole process (guest, HTTP, emulator) {:.2} µs",
            self.events,
            self.requests,
            self.raw_bytes as f64 / 1e6,
            self.wire_bytes as f64 / 1e6,
            per_event(self.guest_cpu),
            per_event(self.process_cpu),
        )
    }

    /// Raw megabytes (10^6) per second.
    #[must_use]
    pub fn mb_per_sec(&self) -> f64 {
        self.raw_bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sends the events among `batches` through the sls component `wasm`.
pub async fn run(
    wasm: &std::path::Path,
    cache: &std::path::Path,
    batches: &[Vec<Entry>],
) -> anyhow::Result<SlsThroughput> {
    let events: Vec<Entry> = batches
        .iter()
        .flatten()
        .filter(|e| matches!(e.record(), Some(Record::Event(_))))
        .cloned()
        .collect();
    let emu = sls::start(EmulatorConfig::default()).await?;
    let key = &emu.config().keys[0];
    let host = Host::new(HostOptions {
        cache_dir: Some(cache.to_path_buf()),
        ..HostOptions::default()
    })?;
    let mut settings: Vec<(String, String)> = vec![
        ("endpoint".into(), emu.endpoint()),
        ("project".into(), "kubesink".into()),
        ("logstore".into(), "events".into()),
        ("access_key_id".into(), key.id.clone()),
        ("access_key_secret".into(), key.secret.clone()),
    ];
    // The sink's default unless set (to compare concurrency levels).
    if let Ok(n) = std::env::var("BENCH_SLS_MAX_IN_FLIGHT") {
        settings.push(("max_in_flight".into(), n));
    }
    let mut sink = host
        .load(SinkSpec {
            name: "sls".into(),
            module: ModuleSource::Path(wasm.to_path_buf()),
            settings,
            sql_grants: vec![],
            limits: Limits {
                http_allow: vec![format!("http://{}", emu.addr())],
                ..Limits::default()
            },
        })
        .await
        .context("loading the sls sink component")?;
    let mut elapsed = Duration::ZERO;
    let pid = std::process::id();
    let cpu0 = crate::procfs::cpu_seconds(pid).unwrap_or_default();
    let started = Instant::now();
    let chunks = events.len().div_ceil(BATCH);
    for (i, batch) in events.chunks(BATCH).enumerate() {
        let t = Instant::now();
        sink.write(batch)
            .await
            .with_context(|| format!("sls sink, batch {i}"))?;
        elapsed += t.elapsed();
        if chunks >= 20 && (i + 1).is_multiple_of(chunks / 10) {
            eprintln!(
                "  sls: {}/{chunks} batches, {:.1} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let process_cpu = Duration::from_secs_f64(
        (crate::procfs::cpu_seconds(pid).unwrap_or_default() - cpu0).max(0.0),
    );
    let guest_cpu = sink.stats().guest_cpu;
    let requests = emu.requests();
    let raw_bytes = requests
        .iter()
        .filter_map(|r| r.header("x-log-bodyrawsize")?.parse::<u64>().ok())
        .sum();
    let wire_bytes = requests.iter().map(|r| r.body_len as u64).sum();
    let stored = emu.logs("kubesink", "events").len();
    ensure!(
        stored == events.len(),
        "the emulator stored {stored} logs for {} events sent",
        events.len()
    );
    emu.stop();
    Ok(SlsThroughput {
        events: events.len() as u64,
        raw_bytes,
        wire_bytes,
        requests: requests.len(),
        elapsed,
        guest_cpu,
        process_cpu,
    })
}
