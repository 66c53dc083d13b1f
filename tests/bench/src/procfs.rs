//! Process and machine facts from `/proc` (Linux): a sampler of a child's
//! resident memory (current and peak, `VmRSS` / `VmHWM`), and the machine
//! description the report starts with.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// `VmRSS` and `VmHWM` of process `pid` in bytes, when it still runs.
#[must_use]
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text)
}

/// The `NAME: <n> kB` line of a /proc file, in bytes.
fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
}

fn parse_status(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| kb_field(text, name);
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Resident memory of a process by kind of page, in bytes
/// (`/proc/PID/smaps_rollup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollup {
    /// All resident pages (`Rss`).
    pub rss: u64,
    /// Anonymous pages (`Anonymous`): the heap, thread stacks, wasm linear
    /// memories.
    pub anon: u64,
    /// File-backed pages (`Rss` − `Anonymous`): the binary, shared
    /// libraries, mapped compiled components.
    pub file: u64,
}

/// `smaps_rollup` of process `pid`, when it still runs.
#[must_use]
pub fn rollup(pid: u32) -> Option<Rollup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_rollup(&text)
}

fn parse_rollup(text: &str) -> Option<Rollup> {
    let field = |name: &str| kb_field(text, name);
    let rss = field("Rss:")?;
    let anon = field("Anonymous:")?;
    Some(Rollup {
        rss,
        anon,
        file: rss.saturating_sub(anon),
    })
}

/// Resident bytes of the guests' linear memories, found the way wasmtime
/// lays them out: the accessible pages (read-write, anonymous or a
/// copy-on-write image) directly followed by the inaccessible rest of the
/// reservation, which is at least 1 GiB (4 GiB by default); nothing else
/// in kubesink maps that much inaccessible memory (glibc heap arenas
/// reserve 64 MiB, thread stack guards a few pages). `None` when
/// `/proc/PID/smaps` cannot be read.
#[must_use]
pub fn linear_memory(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    Some(parse_linear_memory(&text))
}

fn parse_linear_memory(text: &str) -> u64 {
    const RESERVED: u64 = 1 << 30;
    struct Map<'a> {
        start: u64,
        end: u64,
        perms: &'a str,
        rss: u64,
    }
    let mut maps: Vec<Map<'_>> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
        {
            let perms = words.next().unwrap_or_default();
            maps.push(Map {
                start,
                end,
                perms,
                rss: 0,
            });
        } else if let Some(rest) = line.strip_prefix("Rss:")
            && let Some(m) = maps.last_mut()
        {
            m.rss = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
                * 1024;
        }
    }
    let mut total = 0;
    for (i, m) in maps.iter().enumerate() {
        if !(m.perms.starts_with("---") && m.end - m.start >= RESERVED) {
            continue;
        }
        let mut next_start = m.start;
        for before in maps[..i].iter().rev() {
            if before.end != next_start || !before.perms.starts_with("rw") {
                break;
            }
            total += before.rss;
            next_start = before.start;
        }
    }
    total
}

/// User plus system CPU seconds process `pid` has used (`/proc/PID/stat`,
/// in clock ticks of 1/100 s, the Linux default).
#[must_use]
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&text)
}

fn parse_stat_cpu(text: &str) -> Option<f64> {
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Polls a process's memory every `period` until stopped; keeps the
/// largest `VmHWM` seen (the kernel's own peak, so short spikes between
/// polls are not missed while the process lives).
#[derive(Debug)]
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl PeakSampler {
    /// Starts polling `pid`.
    #[must_use]
    pub fn start(pid: u32, period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some((_, hwm)) = memory(pid) {
                    p.fetch_max(hwm, Ordering::Relaxed);
                }
                std::thread::sleep(period);
            }
        });
        Self {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// The peak seen so far, in bytes.
    #[must_use]
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Stops polling; returns the peak in bytes.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak()
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// CPU model, logical CPUs, memory and kernel, as one line.
#[must_use]
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{model}, {cpus} logical CPUs, {mem_gib:.1} GiB RAM, Linux {}, load average at start {}",
        kernel.trim(),
        load.join(" ")
    )
}

/// The version of `package` locked in the workspace's `Cargo.lock`.
#[must_use]
pub fn locked_version(workspace: &Path, package: &str) -> Option<String> {
    let lock = std::fs::read_to_string(workspace.join("Cargo.lock")).ok()?;
    let needle = format!("name = \"{package}\"\n");
    let at = lock.find(&needle)? + needle.len();
    let rest = &lock[at..];
    let line = rest.lines().next()?;
    Some(
        line.strip_prefix("version = ")?
            .trim_matches('"')
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rss_and_peak() {
        let text = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status(text), Some((1024 * 1024, 2048 * 1024)));
        assert_eq!(parse_status("Name: x\n"), None);
    }

    #[test]
    fn parses_smaps_rollup() {
        let text = "55d0-7ffe ---p 00000000 00:00 0 [rollup]\nRss:    3000 kB\nPss:   2000 kB\nAnonymous:  1000 kB\n";
        assert_eq!(
            parse_rollup(text),
            Some(Rollup {
                rss: 3000 * 1024,
                anon: 1000 * 1024,
                file: 2000 * 1024
            })
        );
        let own = rollup(std::process::id()).expect("own smaps_rollup");
        assert!(
            own.rss > 0 && own.anon > 0 && own.anon <= own.rss,
            "{own:?}"
        );
    }

    #[test]
    fn finds_the_resident_part_of_linear_memories() {
        // A guard, an image mapped copy-on-write, anonymous pages, the
        // rest of the reservation; then a heap arena and a thread stack.
        let text = "\
7eff00000000-7eff02000000 ---p 00000000 00:00 0 \nRss:  0 kB\n\
7eff02000000-7eff02010000 rw-p 00000000 00:1a 7 /memfd:wasm-memory-image (deleted)\nRss:  64 kB\n\
7eff02010000-7eff02110000 rw-p 00000000 00:00 0 \nRss:  1024 kB\n\
7eff02110000-7f0002000000 ---p 00000000 00:00 0 \nRss:  0 kB\n\
7f0002000000-7f0002100000 rw-p 00000000 00:00 0 \nRss:  512 kB\n\
7f0002100000-7f0006000000 ---p 00000000 00:00 0 \nRss:  0 kB\n\
7f0006000000-7f0006001000 ---p 00000000 00:00 0 \nRss:  0 kB\n\
7f0006001000-7f0006201000 rw-p 00000000 00:00 0 \nRss:  16 kB\n";
        assert_eq!(parse_linear_memory(text), (64 + 1024) * 1024);
        assert!(linear_memory(std::process::id()).is_some());
    }

    #[test]
    fn parses_cpu_ticks_after_a_command_with_spaces() {
        let line = "42 (my proc) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat_cpu(line), Some(3.0));
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn own_process_has_memory_and_a_peak_at_least_current() {
        let (rss, hwm) = memory(std::process::id()).expect("own status");
        assert!(rss > 0 && hwm >= rss, "rss {rss} hwm {hwm}");
    }

    #[test]
    fn finds_wasmtime_in_the_lock_file() {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let v = locked_version(&ws, "wasmtime").expect("wasmtime locked");
        assert!(v.starts_with("48."), "{v}");
    }
}
