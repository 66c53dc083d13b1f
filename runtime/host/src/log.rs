//! A guest's stdout and stderr, sent to `tracing` line by line.
//!
//! Each sink instance gets one [`GuestLog`]: a token bucket of
//! `log_bytes_per_sec` bytes per second (burst: one second's worth) shared
//! by both streams, and a line buffer per stream. Complete lines are logged
//! under target `kubesink::sink` with fields `sink` and `stream` (stdout at
//! INFO, stderr at WARN); lines over the budget are dropped and counted, and
//! the count is logged (at most once a second, and when the instance goes
//! away). A line longer than [`MAX_LINE`] is logged in pieces.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line kept in the buffer before it is logged as is.
pub const MAX_LINE: usize = 4096;

/// How often the count of dropped bytes is reported while dropping.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(1);

/// Counters of what a guest wrote to stdout/stderr, shared with the
/// instance that owns the log.
#[derive(Debug, Default)]
pub struct LogCounters {
    /// Bytes logged.
    pub logged: AtomicU64,
    /// Bytes dropped by the rate limit.
    pub dropped: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stdout,
    Stderr,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Stdout => "stdout",
            Kind::Stderr => "stderr",
        }
    }
}

/// Token bucket over bytes.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(bytes_per_sec: usize, now: Instant) -> Self {
        let rate = bytes_per_sec as f64;
        Self {
            rate,
            tokens: rate,
            last: now,
        }
    }

    fn take(&mut self, n: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        let n = n as f64;
        if n <= self.tokens {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Shared {
    sink: Arc<str>,
    bucket: Bucket,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Dropped since the last report.
    dropped_unreported: u64,
    last_report: Instant,
    counters: Arc<LogCounters>,
}

impl Shared {
    fn buf(&mut self, kind: Kind) -> &mut Vec<u8> {
        match kind {
            Kind::Stdout => &mut self.stdout,
            Kind::Stderr => &mut self.stderr,
        }
    }

    fn write(&mut self, kind: Kind, mut bytes: &[u8], now: Instant) {
        while !bytes.is_empty() {
            let room = MAX_LINE - self.buf(kind).len();
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) if i < room => {
                    self.buf(kind).extend_from_slice(&bytes[..i]);
                    bytes = &bytes[i + 1..];
                    self.emit(kind, now);
                }
                _ => {
                    let n = room.min(bytes.len());
                    self.buf(kind).extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if self.buf(kind).len() >= MAX_LINE {
                        self.emit(kind, now);
                    }
                }
            }
        }
        self.report_dropped(now, false);
    }

    /// Logs (or drops) the buffered line of `kind`.
    fn emit(&mut self, kind: Kind, now: Instant) {
        let line = std::mem::take(self.buf(kind));
        // A newline counts towards the budget too, so that a flood of empty
        // lines is limited as well.
        let cost = line.len() + 1;
        if self.bucket.take(cost, now) {
            self.counters
                .logged
                .fetch_add(cost as u64, Ordering::Relaxed);
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\r');
            match kind {
                Kind::Stdout => {
                    tracing::info!(target: "kubesink::sink", sink = %self.sink, stream = kind.name(), "{text}")
                }
                Kind::Stderr => {
                    tracing::warn!(target: "kubesink::sink", sink = %self.sink, stream = kind.name(), "{text}")
                }
            }
        } else {
            self.counters
                .dropped
                .fetch_add(cost as u64, Ordering::Relaxed);
            self.dropped_unreported += cost as u64;
        }
        // Give the buffer back to keep its allocation.
        let mut line = line;
        line.clear();
        *self.buf(kind) = line;
    }

    fn report_dropped(&mut self, now: Instant, force: bool) {
        if self.dropped_unreported > 0
            && (force || now.saturating_duration_since(self.last_report) >= DROP_REPORT_EVERY)
        {
            tracing::warn!(
                target: "kubesink::sink",
                sink = %self.sink,
                dropped_bytes = self.dropped_unreported,
                rate_limit_bytes_per_sec = self.bucket.rate,
                "sink output over the log rate limit was dropped"
            );
            self.dropped_unreported = 0;
            self.last_report = now;
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let now = Instant::now();
        for kind in [Kind::Stdout, Kind::Stderr] {
            if !self.buf(kind).is_empty() {
                self.emit(kind, now);
            }
        }
        self.report_dropped(now, true);
    }
}

/// The log of one sink instance; hand [`GuestLog::stdout`] and
/// [`GuestLog::stderr`] to the WASI context.
#[derive(Debug, Clone)]
pub struct GuestLog {
    shared: Arc<Mutex<Shared>>,
}

impl GuestLog {
    /// A log for sink `sink` limited to `bytes_per_sec`, counting into
    /// `counters`.
    pub fn new(sink: &str, bytes_per_sec: usize, counters: Arc<LogCounters>) -> Self {
        let now = Instant::now();
        Self {
            shared: Arc::new(Mutex::new(Shared {
                sink: sink.into(),
                bucket: Bucket::new(bytes_per_sec, now),
                stdout: Vec::new(),
                stderr: Vec::new(),
                dropped_unreported: 0,
                last_report: now,
                counters,
            })),
        }
    }

    /// The guest's stdout.
    pub fn stdout(&self) -> GuestStream {
        GuestStream {
            log: self.clone(),
            kind: Kind::Stdout,
        }
    }

    /// The guest's stderr.
    pub fn stderr(&self) -> GuestStream {
        GuestStream {
            log: self.clone(),
            kind: Kind::Stderr,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while logging leaves the buffers consistent enough.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One of the guest's output streams.
#[derive(Debug, Clone)]
pub struct GuestStream {
    log: GuestLog,
    kind: Kind,
}

impl GuestStream {
    fn write_bytes(&self, bytes: &[u8]) {
        self.log.lock().write(self.kind, bytes, Instant::now());
    }
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Lines are logged when complete; a partial line waits for its end.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(rate: usize) -> (Shared, Arc<LogCounters>, Instant) {
        let counters = Arc::new(LogCounters::default());
        let now = Instant::now();
        let s = Shared {
            sink: "t".into(),
            bucket: Bucket::new(rate, now),
            stdout: Vec::new(),
            stderr: Vec::new(),
            dropped_unreported: 0,
            last_report: now,
            counters: counters.clone(),
        };
        (s, counters, now)
    }

    #[test]
    fn logs_whole_lines_and_keeps_partial_ones() {
        let (mut s, c, now) = shared(1000);
        s.write(Kind::Stdout, b"hello\nwor", now);
        assert_eq!(c.logged.load(Ordering::Relaxed), 6);
        assert_eq!(s.stdout, b"wor");
        s.write(Kind::Stdout, b"ld\n", now);
        assert_eq!(c.logged.load(Ordering::Relaxed), 12);
        assert!(s.stdout.is_empty());
    }

    #[test]
    fn drops_over_budget_and_refills_with_time() {
        let (mut s, c, now) = shared(100);
        let line = [b'x'; 59];
        let mut data = line.to_vec();
        data.push(b'\n');
        s.write(Kind::Stderr, &data, now); // 60 of 100
        s.write(Kind::Stderr, &data, now); // over: dropped
        assert_eq!(c.logged.load(Ordering::Relaxed), 60);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 60);
        // After a second the bucket is full again.
        s.write(Kind::Stderr, &data, now + Duration::from_secs(1));
        assert_eq!(c.logged.load(Ordering::Relaxed), 120);
        // The drop count was reported (and reset) once a second had passed.
        assert_eq!(s.dropped_unreported, 0);
    }

    #[test]
    fn splits_overlong_lines() {
        let (mut s, c, now) = shared(1 << 20);
        s.write(Kind::Stdout, &vec![b'y'; MAX_LINE * 2 + 10], now);
        assert_eq!(c.logged.load(Ordering::Relaxed), 2 * (MAX_LINE as u64 + 1));
        assert_eq!(s.stdout.len(), 10);
    }

    #[test]
    fn streams_have_separate_line_buffers() {
        let (mut s, c, now) = shared(1000);
        s.write(Kind::Stdout, b"out", now);
        s.write(Kind::Stderr, b"err\n", now);
        assert_eq!(s.stdout, b"out");
        assert_eq!(c.logged.load(Ordering::Relaxed), 4);
    }
}
