//! `kubesink-gen`: prints a deterministic watch stream for benchmarks, in the
//! format of `kubectl get --watch --output-watch-events -o json` (one JSON
//! document per line, each `{"type": "ADDED|MODIFIED|DELETED", "object":
//! {...}}`), with strictly increasing resourceVersions.
//!
//! ```sh
//! cargo run -p kubesink-tests --bin kubesink-gen -- --events 100000 > /tmp/ev.json
//! ```
//!
//! The stream holds `--jobs` jobs (KubeDL TFJobs and PyTorchJobs and batch/v1
//! Jobs, in turn), each with `--pods-per-job` pods, living through Created →
//! Running → Succeeded (every 7th fails, with an OOM-killed pod); every 10th
//! finished job is then deleted with its pods. `--events` is the number of
//! event documents: core/v1 events about the jobs and pods, of which about
//! one in five is a repeat (the same uid MODIFIED with a higher count and a
//! later lastTimestamp). The same arguments and `--seed` give the same bytes.

use std::io::{self, BufWriter, Write};

use anyhow::Context as _;
use clap::Parser;
use serde_json::{Value, json};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "kubesink-gen",
    about = "Prints a deterministic Kubernetes watch stream of jobs, pods and events"
)]
struct Args {
    /// Number of jobs.
    #[arg(long, default_value_t = 100)]
    jobs: u32,
    /// Pods per job.
    #[arg(long, default_value_t = 3)]
    pods_per_job: u32,
    /// Number of event documents (ADDED and repeat MODIFIED).
    #[arg(long, default_value_t = 1000)]
    events: u64,
    /// Seed of the pseudo-random choices (uids, nodes, messages).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// SplitMix64: tiny, fast, and the same on every platform and version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn uid(&mut self) -> String {
        let a = self.next();
        let b = self.next();
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
}

/// 2026-03-02T00:00:00Z.
const EPOCH: i64 = 1_772_409_600;

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(EPOCH + t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Tf,
    PyTorch,
    Batch,
}

impl Kind {
    fn names(self) -> (&'static str, &'static str, &'static str, &'static str) {
        // apiVersion, kind, replica specs field, main container
        match self {
            Kind::Tf => (
                "training.kubedl.io/v1alpha1",
                "TFJob",
                "tfReplicaSpecs",
                "tensorflow",
            ),
            Kind::PyTorch => (
                "training.kubedl.io/v1alpha1",
                "PyTorchJob",
                "pytorchReplicaSpecs",
                "pytorch",
            ),
            Kind::Batch => ("batch/v1", "Job", "", "main"),
        }
    }
}

/// A job being generated.
struct JobState {
    kind: Kind,
    name: String,
    ns: String,
    uid: String,
    created: i64,
    obj: Value,
}

/// A pod being generated.
struct PodState {
    obj: Value,
    node: String,
}

/// An event that may repeat.
struct EventState {
    obj: Value,
    count: u64,
}

const NAMESPACES: [&str; 4] = ["ml", "research", "default", "batch"];
const TENANTS: [&str; 3] = ["ai-lab", "search", "ads"];

struct Gen<W: Write> {
    out: W,
    rng: Rng,
    rv: u64,
    clock: i64,
    events_left: u64,
    event_seq: u64,
}

impl<W: Write> Gen<W> {
    fn emit(&mut self, kind: &str, obj: &mut Value) -> io::Result<()> {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        serde_json::to_writer(&mut self.out, &json!({"type": kind, "object": obj}))?;
        self.out.write_all(b"\n")
    }

    fn tick(&mut self, max: u64) -> i64 {
        self.clock += 1 + i64::try_from(self.rng.below(max)).unwrap_or(0);
        self.clock
    }

    fn job(&mut self, index: u32, pods_per_job: u32) -> JobState {
        let kind = match index % 3 {
            0 => Kind::Tf,
            1 => Kind::PyTorch,
            _ => Kind::Batch,
        };
        let (api, k, specs, container) = kind.names();
        let ns = NAMESPACES[(self.rng.below(4)) as usize].to_string();
        let name = format!("{}-{index:06}", k.to_lowercase());
        let uid = self.rng.uid();
        let created = self.tick(5);
        let pod_spec = |cpu: &str, mem: &str| {
            json!({"containers": [{"name": container, "image": format!("registry.example.com/train/{}:v{}", k.to_lowercase(), index % 5),
                "resources": {"requests": {"cpu": cpu, "memory": mem}, "limits": {"cpu": cpu, "memory": mem}}}],
                "restartPolicy": "Never"})
        };
        let tenant = TENANTS[(self.rng.below(3)) as usize];
        let mut meta = json!({"name": name, "namespace": ns, "uid": uid, "creationTimestamp": rfc3339(created),
            "labels": {"app": name, "bench": "kubesink-gen"}});
        let spec = if kind == Kind::Batch {
            json!({"parallelism": pods_per_job, "completions": pods_per_job, "backoffLimit": 1,
                   "template": {"spec": pod_spec("500m", "512Mi")}})
        } else {
            meta["annotations"] = json!({"kubedl.io/tenancy":
                format!(r#"{{"tenant":"{tenant}","user":"user-{}","region":"cn-hangzhou"}}"#, index % 17)});
            let workers = pods_per_job.saturating_sub(1);
            let master = if kind == Kind::Tf { "PS" } else { "Master" };
            let mut specs_map = serde_json::Map::new();
            specs_map.insert(
                master.to_string(),
                json!({"replicas": 1, "template": {"spec": pod_spec("1", "2Gi")}}),
            );
            if workers > 0 {
                specs_map.insert(
                    "Worker".to_string(),
                    json!({"replicas": workers, "template": {"spec": pod_spec("4", "8Gi")}}),
                );
            }
            json!({ specs: specs_map })
        };
        let obj = json!({"apiVersion": api, "kind": k, "metadata": meta, "spec": spec});
        JobState {
            kind,
            name,
            ns,
            uid,
            created,
            obj,
        }
    }

    fn pod(&mut self, job: &JobState, index: u32) -> PodState {
        let (api, k, _, container) = job.kind.names();
        let (rtype, rindex) = match (job.kind, index) {
            (Kind::Batch, _) => ("worker", index),
            (Kind::Tf, 0) => ("ps", 0),
            (Kind::PyTorch, 0) => ("master", 0),
            _ => ("worker", index - 1),
        };
        let name = if job.kind == Kind::Batch {
            format!("{}-{:05x}", job.name, self.rng.below(0xfffff))
        } else {
            format!("{}-{rtype}-{rindex}", job.name)
        };
        let node = format!("node-{:03}", self.rng.below(64));
        let mut labels = json!({"job-name": job.name});
        if job.kind != Kind::Batch {
            labels["replica-type"] = json!(rtype);
            labels["replica-index"] = json!(rindex.to_string());
            labels["group-name"] = json!("training.kubedl.io");
        }
        let created = self.tick(3);
        let obj = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": job.ns, "uid": self.rng.uid(), "creationTimestamp": rfc3339(created),
                "labels": labels,
                "ownerReferences": [{"apiVersion": api, "kind": k, "name": job.name, "uid": job.uid,
                                     "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"containers": [{"name": container, "image": format!("registry.example.com/train/{}:v1", k.to_lowercase()),
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}], "restartPolicy": "Never", "nodeName": node},
            "status": {"phase": "Pending", "qosClass": "Burstable"}
        });
        PodState { obj, node }
    }

    /// Emits up to `n` event documents about `about`; some repeat earlier
    /// events of `pool`.
    fn events(&mut self, about: &Value, n: u64, pool: &mut Vec<EventState>) -> io::Result<()> {
        for _ in 0..n.min(self.events_left) {
            self.events_left -= 1;
            let t = self.tick(2);
            if !pool.is_empty() && self.rng.below(5) == 0 {
                let i = self.rng.below(pool.len() as u64) as usize;
                let e = &mut pool[i];
                e.count += 1;
                e.obj["count"] = json!(e.count);
                e.obj["lastTimestamp"] = json!(rfc3339(t));
                let mut obj = e.obj.clone();
                self.emit("MODIFIED", &mut obj)?;
                e.obj = obj;
                continue;
            }
            self.event_seq += 1;
            let meta = &about["metadata"];
            let is_pod = about["kind"] == "Pod";
            let (etype, reason, message, source) = match (is_pod, self.rng.below(6)) {
                (true, 0) => ("Normal", "Pulling", "Pulling image \"registry.example.com/train/job:v1\"".to_string(), "kubelet"),
                (true, 1) => ("Normal", "Pulled", "Container image \"registry.example.com/train/job:v1\" already present on machine".to_string(), "kubelet"),
                (true, 2) => ("Normal", "Started", "Started container main".to_string(), "kubelet"),
                (true, 3) => ("Warning", "BackOff", "Back-off restarting failed container main".to_string(), "kubelet"),
                (true, 4) => ("Warning", "FailedScheduling", "0/64 nodes are available: 64 Insufficient nvidia.com/gpu.".to_string(), "default-scheduler"),
                (true, _) => ("Normal", "Created", "Created container: main".to_string(), "kubelet"),
                (false, 0 | 1) => ("Normal", "SuccessfulCreatePod", format!("Created pod: {}-{}", meta["name"].as_str().unwrap_or(""), self.event_seq), "job-controller"),
                (false, 2) => ("Warning", "Restarting", "Job is restarting because 1 Worker replica(s) failed.".to_string(), "job-controller"),
                (false, _) => ("Normal", "Running", "Job is running.".to_string(), "job-controller"),
            };
            let name = format!(
                "{}.{:x}",
                meta["name"].as_str().unwrap_or("x"),
                (EPOCH + t) as u64 * 1_000_000_000 + self.event_seq
            );
            let host = if source == "kubelet" {
                format!("node-{:03}", self.event_seq % 64)
            } else {
                String::new()
            };
            let mut obj = json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": meta["namespace"], "uid": self.rng.uid(), "creationTimestamp": rfc3339(t)},
                "involvedObject": {"apiVersion": about["apiVersion"], "kind": about["kind"], "namespace": meta["namespace"],
                                   "name": meta["name"], "uid": meta["uid"]},
                "reason": reason, "message": message,
                "source": if host.is_empty() { json!({"component": source}) } else { json!({"component": source, "host": host}) },
                "firstTimestamp": rfc3339(t), "lastTimestamp": rfc3339(t), "count": 1, "type": etype,
                "eventTime": null, "reportingComponent": source, "reportingInstance": host
            });
            self.emit("ADDED", &mut obj)?;
            pool.push(EventState { obj, count: 1 });
            if pool.len() > 32 {
                pool.remove(0);
            }
        }
        Ok(())
    }

    fn run(&mut self, args: &Args) -> io::Result<()> {
        let jobs = args.jobs.max(1);
        let per_job = self.events_left / u64::from(jobs);
        let mut extra = self.events_left % u64::from(jobs);
        let mut pool: Vec<EventState> = Vec::new();
        let mut last = None;
        for j in 0..jobs {
            let mut budget = per_job + u64::from(extra > 0);
            extra = extra.saturating_sub(1);
            let mut job = self.job(j, args.pods_per_job);
            let failing = j % 7 == 6;
            self.emit("ADDED", &mut job.obj)?;
            let t = self.tick(2);
            let training = job.kind != Kind::Batch;
            if training {
                job.obj["status"] = json!({"conditions": [cond("Created", t)]});
                self.emit("MODIFIED", &mut job.obj)?;
            }
            let mut pods: Vec<PodState> =
                (0..args.pods_per_job).map(|i| self.pod(&job, i)).collect();
            for p in &mut pods {
                self.emit("ADDED", &mut p.obj)?;
            }
            // A third of the job's events come while its pods start.
            let early = budget / 3;
            budget -= early;
            let job_obj = job.obj.clone();
            self.events(&job_obj, early / 2, &mut pool)?;
            for p in &mut pods {
                let t = self.tick(20);
                let ip = format!(
                    "10.{}.{}.{}",
                    self.rng.below(256),
                    self.rng.below(256),
                    1 + self.rng.below(254)
                );
                let node_ip = format!(
                    "192.168.{}.{}",
                    p.node[5..].parse::<u32>().unwrap_or(0) / 250,
                    1 + self.rng.below(250)
                );
                p.obj["status"] = json!({"phase": "Running", "hostIP": node_ip, "podIP": ip, "startTime": rfc3339(t),
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": rfc3339(t)}],
                    "containerStatuses": [{"name": p.obj["spec"]["containers"][0]["name"], "ready": true, "restartCount": 0,
                        "image": p.obj["spec"]["containers"][0]["image"], "imageID": "",
                        "state": {"running": {"startedAt": rfc3339(t)}}}]});
                self.emit("MODIFIED", &mut p.obj)?;
                let pod_obj = p.obj.clone();
                self.events(
                    &pod_obj,
                    (early - early / 2) / u64::from(args.pods_per_job.max(1)),
                    &mut pool,
                )?;
            }
            let t = self.tick(10);
            if training {
                if let Some(c) = job.obj["status"]["conditions"].as_array_mut() {
                    c.push(cond("Running", t));
                }
            } else {
                job.obj["status"] = json!({"active": args.pods_per_job, "startTime": rfc3339(t)});
            }
            self.emit("MODIFIED", &mut job.obj)?;
            // The rest of the events while it runs, spread over job and pods.
            let targets = pods.len() + 1;
            for (i, share) in split(budget, targets).into_iter().enumerate() {
                let about = if i == 0 {
                    job.obj.clone()
                } else {
                    pods[i - 1].obj.clone()
                };
                self.events(&about, share, &mut pool)?;
            }
            // Finish.
            for (i, p) in pods.iter_mut().enumerate() {
                let t = self.tick(600);
                let (phase, code, reason) = if failing && i + 1 == args.pods_per_job as usize {
                    ("Failed", 137, "OOMKilled")
                } else {
                    ("Succeeded", 0, "Completed")
                };
                let started = p.obj["status"]["startTime"].clone();
                p.obj["status"]["phase"] = json!(phase);
                p.obj["status"]["containerStatuses"][0]["ready"] = json!(false);
                p.obj["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": code, "reason": reason,
                    "startedAt": started, "finishedAt": rfc3339(t)}});
                self.emit("MODIFIED", &mut p.obj)?;
            }
            let t = self.tick(3);
            let (done, batch_done) = if failing {
                ("Failed", "Failed")
            } else {
                ("Succeeded", "Complete")
            };
            if training {
                if let Some(c) = job.obj["status"]["conditions"].as_array_mut() {
                    for c in c.iter_mut() {
                        if c["type"] == "Running" {
                            c["status"] = json!("False");
                        }
                    }
                    c.push(cond(done, t));
                }
                job.obj["status"]["completionTime"] = json!(rfc3339(t));
            } else {
                let start = job.obj["status"]["startTime"].clone();
                job.obj["status"] = json!({"startTime": start, "completionTime": rfc3339(t),
                    "succeeded": if failing { 0 } else { args.pods_per_job },
                    "conditions": [{"type": batch_done, "status": "True", "lastTransitionTime": rfc3339(t), "lastProbeTime": rfc3339(t)}]});
            }
            self.emit("MODIFIED", &mut job.obj)?;
            if j % 10 == 9 {
                let t = self.tick(5);
                for p in &mut pods {
                    p.obj["metadata"]["deletionTimestamp"] = json!(rfc3339(t));
                    p.obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                    self.emit("DELETED", &mut p.obj)?;
                }
                job.obj["metadata"]["deletionTimestamp"] = json!(rfc3339(t));
                self.emit("DELETED", &mut job.obj)?;
            }
            debug_assert!(job.created <= self.clock);
            last = Some(job.obj);
        }
        // Events left over by rounding the shares: about the last job.
        if let Some(about) = last {
            let left = self.events_left;
            self.events(&about, left, &mut pool)?;
        }
        self.out.flush()
    }
}

/// A training-job condition at `t`.
fn cond(kind: &str, t: i64) -> Value {
    json!({"type": kind, "status": "True", "reason": format!("Job{kind}"), "message": format!("Job is {}.", kind.to_lowercase()),
           "lastUpdateTime": rfc3339(t), "lastTransitionTime": rfc3339(t)})
}

/// `n` split into `parts` near-equal shares.
fn split(n: u64, parts: usize) -> Vec<u64> {
    let parts = parts.max(1) as u64;
    (0..parts)
        .map(|i| n / parts + u64::from(i < n % parts))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stdout = io::stdout();
    let mut g = Gen {
        out: BufWriter::with_capacity(1 << 20, stdout.lock()),
        rng: Rng(args.seed),
        rv: 1_000,
        clock: 0,
        events_left: args.events,
        event_seq: 0,
    };
    g.run(&args).context("writing the stream to stdout")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(args: &[&str]) -> String {
        let args = Args::parse_from(std::iter::once("kubesink-gen").chain(args.iter().copied()));
        let mut buf = Vec::new();
        let mut g = Gen {
            out: &mut buf,
            rng: Rng(args.seed),
            rv: 1_000,
            clock: 0,
            events_left: args.events,
            event_seq: 0,
        };
        g.run(&args).expect("generate");
        String::from_utf8(buf).expect("utf-8")
    }

    fn docs(s: &str) -> Vec<Value> {
        s.lines()
            .map(|l| serde_json::from_str(l).expect("document"))
            .collect()
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = generate(&["--jobs", "5", "--events", "200", "--seed", "7"]);
        assert_eq!(
            a,
            generate(&["--jobs", "5", "--events", "200", "--seed", "7"])
        );
        assert_ne!(
            a,
            generate(&["--jobs", "5", "--events", "200", "--seed", "8"])
        );
    }

    #[test]
    fn counts_and_resource_versions() {
        let d = docs(&generate(&[
            "--jobs",
            "20",
            "--pods-per-job",
            "4",
            "--events",
            "1000",
        ]));
        let kind = |d: &Value| d["object"]["kind"].as_str().unwrap_or("").to_string();
        let events = d.iter().filter(|d| kind(d) == "Event").count();
        assert_eq!(events, 1000);
        let repeats = d
            .iter()
            .filter(|d| kind(d) == "Event" && d["type"] == "MODIFIED")
            .count();
        assert!(
            repeats > 100 && repeats < 300,
            "about one in five repeats: {repeats}"
        );
        let pods: std::collections::HashSet<_> = d
            .iter()
            .filter(|d| kind(d) == "Pod")
            .map(|d| d["object"]["metadata"]["uid"].to_string())
            .collect();
        assert_eq!(pods.len(), 80);
        let jobs: std::collections::HashSet<_> = d
            .iter()
            .filter(|d| kind(d) != "Pod" && kind(d) != "Event")
            .map(|d| d["object"]["metadata"]["uid"].to_string())
            .collect();
        assert_eq!(jobs.len(), 20);
        let deleted = d.iter().filter(|d| d["type"] == "DELETED").count();
        assert_eq!(
            deleted,
            2 * (4 + 1),
            "jobs 10 and 20 deleted with their pods"
        );
        let rvs: Vec<u64> = d
            .iter()
            .map(|d| {
                d["object"]["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("rv")
            })
            .collect();
        assert!(rvs.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    }

    #[test]
    fn every_document_normalizes() {
        let opts = kubesink_normalize::Options::default();
        for (i, d) in docs(&generate(&["--jobs", "9", "--events", "300"]))
            .iter()
            .enumerate()
        {
            let r = kubesink_normalize::normalize(&d["object"], &opts)
                .unwrap_or_else(|e| panic!("document {i}: {e}"));
            assert!(r.is_some(), "document {i} is a recorded kind");
        }
    }

    #[test]
    fn split_is_exact() {
        assert_eq!(split(10, 3), [4, 3, 3]);
        assert_eq!(split(0, 2), [0, 0]);
        assert_eq!(split(5, 0), [5]);
    }
}
