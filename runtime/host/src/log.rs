//! A guest's stdout and stderr, sent to `tracing` line by line, and the
//! escaping of any text a sink hands the host.
//!
//! Each sink has one output budget ([`SinkOutput`]): a token bucket of
//! `log_bytes_per_sec` bytes per second (burst: one second's worth). The
//! host keeps it per sink name ([`SinkOutputs`]), so it is shared by the
//! sink's workers and survives instance rebuilds. Each instance gets a
//! [`GuestLog`] charging that budget, with a line buffer per stream.
//! Complete lines are logged under target `kubesink::sink` with fields
//! `sink` and `stream` (stdout at INFO, stderr at WARN); lines over the
//! budget are dropped and counted, and the count is logged (at most once a
//! second, and when the instance goes away). A line longer than
//! [`MAX_LINE`] is logged in pieces.
//!
//! Text a sink returns (error messages, and everything else of its that
//! may reach a log line) goes through [`sanitize`]: newlines, control
//! characters, ANSI escapes and bidirectional overrides are escaped, so a
//! sink cannot forge a log line, and the text is cut to a bounded length;
//! error text is also charged to the budget ([`SinkOutput::admit`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line kept in the buffer before it is logged as is.
pub(crate) const MAX_LINE: usize = 4096;

/// Longest text of a sink (an error message) kept after escaping.
pub(crate) const MAX_SINK_TEXT: usize = 4096;

/// Whether `c` is escaped by [`sanitize`]: C0 and C1 controls (newlines,
/// tabs, ESC that starts ANSI sequences, ...), DEL, line and paragraph
/// separators, and the bidirectional marks and overrides that reorder what
/// a terminal shows.
fn escaped(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}' | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}'
        | '\u{feff}')
}

/// `text` made safe for one log line: `\n`, `\r`, `\t` and every other
/// control, DEL, ESC (so ANSI sequences are inert), line separators and
/// bidirectional overrides written as escapes (`\u{1b}`), and the result
/// cut at a character boundary to at most `max_len` bytes, ending with
/// `…[cut N bytes]` when cut.
pub fn sanitize(text: &str, max_len: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_len));
    // (length of `out`, index in `text`) after each piece, to cut between
    // pieces, never inside an escape.
    let mut ends: Vec<(usize, usize)> = vec![(0, 0)];
    for (i, c) in text.char_indices() {
        let piece: std::borrow::Cow<'_, str> = match c {
            '\n' => "\\n".into(),
            '\r' => "\\r".into(),
            '\t' => "\\t".into(),
            c if escaped(c) => format!("\\u{{{:x}}}", c as u32).into(),
            c => c.encode_utf8(&mut [0; 4]).to_owned().into(),
        };
        if out.len() + piece.len() > max_len {
            while let Some((len, at)) = ends.pop() {
                let marker = format!("…[cut {} bytes]", text.len() - at);
                if len + marker.len() <= max_len || ends.is_empty() {
                    out.truncate(len);
                    out.push_str(&marker);
                    break;
                }
            }
            return out;
        }
        out.push_str(&piece);
        ends.push((out.len(), i + c.len_utf8()));
    }
    out
}

/// One sink's output budget: the token bucket its log lines and error
/// text are charged to. Shared (in an `Arc`) by all instances of the sink.
#[derive(Debug)]
pub(crate) struct SinkOutput {
    sink: Arc<str>,
    bytes_per_sec: usize,
    bucket: Mutex<Bucket>,
    /// Bytes of error text refused since the last report.
    refused_unreported: AtomicU64,
}

impl SinkOutput {
    /// A budget of `bytes_per_sec` for sink `sink`.
    pub fn new(sink: &str, bytes_per_sec: usize) -> Arc<Self> {
        Arc::new(Self {
            sink: sink.into(),
            bytes_per_sec,
            bucket: Mutex::new(Bucket::new(bytes_per_sec, Instant::now())),
            refused_unreported: AtomicU64::new(0),
        })
    }

    fn take(&self, n: usize, now: Instant) -> bool {
        self.bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(n, now)
    }

    /// Text a sink returned (e.g. an error message), ready for a log
    /// line: escaped and cut ([`sanitize`], [`MAX_SINK_TEXT`]) and charged
    /// to the budget. Over the budget, the text is replaced by a note of
    /// its size.
    pub(crate) fn admit(&self, text: &str) -> String {
        let clean = sanitize(text, MAX_SINK_TEXT);
        if self.take(clean.len(), Instant::now()) {
            clean
        } else {
            self.refused_unreported
                .fetch_add(clean.len() as u64, Ordering::Relaxed);
            format!(
                "[{} bytes of text from the sink not kept: over its output budget of {} bytes/s]",
                text.len(),
                self.bytes_per_sec
            )
        }
    }
}

/// The output budgets of a host's sinks, by sink name.
#[derive(Debug, Default)]
pub(crate) struct SinkOutputs {
    by_name: Mutex<std::collections::HashMap<String, Arc<SinkOutput>>>,
}

impl SinkOutputs {
    /// The budget of sink `sink` (created at `bytes_per_sec` on first use,
    /// or anew when the rate changed).
    pub fn get(&self, sink: &str, bytes_per_sec: usize) -> Arc<SinkOutput> {
        let mut map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(sink) {
            Some(out) if out.bytes_per_sec == bytes_per_sec => out.clone(),
            _ => {
                let out = SinkOutput::new(sink, bytes_per_sec);
                map.insert(sink.to_owned(), out.clone());
                out
            }
        }
    }
}

/// How often the count of dropped bytes is reported while dropping.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(1);

/// Counters of what a guest wrote to stdout/stderr, shared with the
/// instance that owns the log.
#[derive(Debug, Default)]
pub(crate) struct LogCounters {
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
    output: Arc<SinkOutput>,
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
        if self.output.take(cost, now) {
            self.counters
                .logged
                .fetch_add(cost as u64, Ordering::Relaxed);
            let text = String::from_utf8_lossy(&line);
            let text = sanitize(text.trim_end_matches('\r'), 2 * MAX_LINE);
            let sink = &*self.output.sink;
            match kind {
                Kind::Stdout => {
                    tracing::info!(target: "kubesink::sink", sink = %sink, stream = kind.name(), "{text}")
                }
                Kind::Stderr => {
                    tracing::warn!(target: "kubesink::sink", sink = %sink, stream = kind.name(), "{text}")
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
        let refused = self.output.refused_unreported.load(Ordering::Relaxed);
        if (self.dropped_unreported > 0 || refused > 0)
            && (force || now.saturating_duration_since(self.last_report) >= DROP_REPORT_EVERY)
        {
            let refused = self.output.refused_unreported.swap(0, Ordering::Relaxed);
            tracing::warn!(
                target: "kubesink::sink",
                sink = %self.output.sink,
                dropped_bytes = self.dropped_unreported + refused,
                rate_limit_bytes_per_sec = self.output.bytes_per_sec,
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
pub(crate) struct GuestLog {
    shared: Arc<Mutex<Shared>>,
}

impl GuestLog {
    /// A log charging the sink's shared budget `output`, counting into
    /// `counters`.
    pub(crate) fn with_output(output: Arc<SinkOutput>, counters: Arc<LogCounters>) -> Self {
        let now = Instant::now();
        Self {
            shared: Arc::new(Mutex::new(Shared {
                output,
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
pub(crate) struct GuestStream {
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
            output: SinkOutput::new("t", rate),
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
    fn sanitize_escapes_controls_and_cuts_at_a_char_boundary() {
        let forged = "boom\n2026-12-01T06:00:00Z ERROR kubesink: forged\r\t\x1b[31mred\x1b[0m\u{7f}\u{85}\u{202e}x";
        let clean = sanitize(forged, 1000);
        assert_eq!(
            clean,
            "boom\\n2026-12-01T06:00:00Z ERROR kubesink: forged\\r\\t\\u{1b}[31mred\\u{1b}[0m\\u{7f}\\u{85}\\u{202e}x"
        );
        assert!(!clean.chars().any(char::is_control));
        assert_eq!(sanitize("plain, é ü", 100), "plain, é ü");
        let long = "é".repeat(100);
        let cut = sanitize(&long, 50);
        assert!(cut.len() <= 50, "{}", cut.len());
        assert!(cut.starts_with("éé") && cut.ends_with("bytes]"), "{cut}");
        // An escape is never split.
        let cut = sanitize(&"\n".repeat(100), 30);
        assert!(cut.len() <= 30 && !cut.contains("\\…"), "{cut}");
    }

    #[test]
    fn one_budget_per_sink_shared_and_kept() {
        let outputs = SinkOutputs::default();
        let a = outputs.get("s", 100);
        let b = outputs.get("s", 100);
        assert!(Arc::ptr_eq(&a, &b), "workers and rebuilds share it");
        assert!(!Arc::ptr_eq(&a, &outputs.get("other", 100)));
        // Error text is charged: the second 98 bytes do not fit.
        let text = "e".repeat(98);
        assert_eq!(a.admit(&text), text);
        let over = b.admit(&text);
        assert!(
            over.contains("98 bytes") && over.contains("output budget"),
            "{over}"
        );
        // A log line of another instance of the same sink is over too.
        let (mut s, c, now) = shared(100);
        s.output = outputs.get("s", 100);
        s.write(Kind::Stdout, b"hello\n", now);
        assert_eq!(c.logged.load(Ordering::Relaxed), 0);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 6);
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
