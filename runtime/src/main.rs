//! The `kubesink` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, FromArgMatches, Parser, Subcommand};
use kubesink::app::{self, Cluster, LeaderElection, ReplayInput, RunOptions, Runtime};
use kubesink::config::{Config, DEFAULT_SQLITE_PATH, EventStorage, KubedlFlags, MetaStorage};
use kubesink::source::watch::EventFilter;

/// Watches Kubernetes jobs, pods and events and delivers them to sandboxed
/// WebAssembly sinks.
///
/// With no `--config` and no storage switch, everything goes through the
/// bundled mysql sink into a SQLite file (`./kubesink.db`).
///
/// Without a subcommand it runs `run` with its defaults, so KubeDL's
/// manifests (`args: ["--meta-storage", "mysql"]`, which replace the
/// image's `CMD run`) start the watch; `kubesink` alone watches the
/// cluster of the current kubeconfig into `./kubesink.db`.
///
/// Exit status: 0 all delivered; 1 startup error; 3 some input was malformed
/// and skipped (the rest delivered); 4 some records were rejected by a sink;
/// 5 (`run`) the shutdown grace period ran out with records undelivered.
// (The codes are `kubesink::app::ExitStatus`.)
#[derive(Debug, Parser)]
#[command(name = "kubesink", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    /// Default: `run`.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Args)]
struct Global {
    /// YAML configuration file describing connections and sinks.
    #[arg(long, global = true, env = "KUBESINK_CONFIG")]
    config: Option<PathBuf>,
    /// KubeDL's switch: persist jobs and pods (MYSQL_HOST, MYSQL_PORT,
    /// MYSQL_DB_NAME, MYSQL_USER, MYSQL_PASSWORD).
    #[arg(long, global = true, value_enum, env = "KUBESINK_META_STORAGE")]
    meta_storage: Option<MetaStorage>,
    /// KubeDL's switch: persist events (mysql: as above; aliyun-sls:
    /// SLS_ENDPOINT, SLS_KEY_ID, SLS_KEY_SECRET, SLS_PROJECT, SLS_LOG_STORE).
    #[arg(long, global = true, value_enum, env = "KUBESINK_EVENT_STORAGE")]
    event_storage: Option<EventStorage>,
    /// deploy_region written on every record (wins over the tenancy
    /// annotation).
    #[arg(long, global = true, env = "REGION")]
    region: Option<String>,
    /// SQLite file of the embedded default (no config, no storage switch);
    /// `history` also takes a `mysql://` or `postgres://` URL here.
    #[arg(long, global = true, env = "KUBESINK_DB", default_value = DEFAULT_SQLITE_PATH)]
    db: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay objects from a file (or `-` for stdin): a `kubectl get -o
    /// json` object or List, or a `kubectl get --watch --output-watch-events
    /// -o json` stream.
    Replay {
        /// The input file, or `-` for stdin.
        file: String,
        /// Do not print the persisted tables afterwards (embedded default only).
        #[arg(long)]
        no_show: bool,
    },
    /// Print the tables of a SQLite database written by the mysql sink.
    Show,
    /// What happened to recorded jobs: the jobs of a namespace or time
    /// range with status and duration, or one job (`history JOB`) with its
    /// pods and events. Reads `--db`: the SQLite file, a `mysql://` URL
    /// (password from the URL or `MYSQL_PWD`) or a `postgres://` URL
    /// (password from the URL or `PGPASSWORD`).
    History(kubesink::history::HistoryArgs),
    /// Watch a cluster (`--kubeconfig`, `KUBECONFIG`, or in-cluster) and
    /// deliver its jobs, their pods and events until interrupted.
    Run(Box<RunArgs>),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Kubeconfig file; default: `KUBECONFIG`, `~/.kube/config`, or the
    /// in-cluster service account.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "KUBESINK_NAMESPACE")]
    namespace: Option<String>,
    /// Which events: `all`, or `related` (about jobs and pods only).
    #[arg(long, value_enum, default_value = "all")]
    events: EventScope,
    /// Only events in these namespaces (repeatable).
    #[arg(long = "event-namespace")]
    event_namespaces: Vec<String>,
    /// Only events about these kinds, e.g. `Pod`, `TFJob` (repeatable).
    #[arg(long = "event-kind")]
    event_kinds: Vec<String>,
    /// Only events of these types, `Normal` or `Warning` (repeatable).
    #[arg(long = "event-type")]
    event_types: Vec<String>,
    /// Only events with these reasons (repeatable).
    #[arg(long = "event-reason")]
    event_reasons: Vec<String>,
    /// Run as one of several replicas: only the holder of a
    /// `coordination.k8s.io/v1` Lease watches and delivers; the others
    /// stand by and take over when it stops.
    #[arg(long, env = "KUBESINK_LEADER_ELECT")]
    leader_elect: bool,
    /// The Lease's name.
    #[arg(long, default_value = "kubesink")]
    lease_name: String,
    /// The Lease's namespace (default: `POD_NAMESPACE`, else the service
    /// account's namespace, else the kubeconfig's).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// How long the Lease stays valid without renewal: a standby takes over
    /// within this time after the leader dies.
    #[arg(long, value_parser = parse_lease_duration, default_value = "15s")]
    lease_duration: std::time::Duration,
    /// The ConfigMap, in kubesink's own namespace, that keeps what each
    /// checkpointed (log) sink has delivered, so that a restart or a
    /// leader hand-over does not deliver it again. kubesink creates and
    /// updates it.
    #[arg(long, default_value = kubesink::checkpoint::DEFAULT_NAME)]
    checkpoint_configmap: String,
    /// Keep no checkpoint: every start delivers to log sinks what the
    /// cluster still holds.
    #[arg(long)]
    no_checkpoint: bool,
    /// Address of the operations server: `/metrics` (Prometheus),
    /// `/healthz`, `/readyz`. Port 0 picks a free port (the bound address
    /// is logged as `listening on http://ADDR`).
    #[arg(long, env = "KUBESINK_LISTEN", default_value = "0.0.0.0:8080")]
    listen: String,
    /// On SIGTERM or Ctrl-C: how long to keep delivering what is queued
    /// before giving up (exit status 5 when records are left undelivered).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    shutdown_grace: std::time::Duration,
}

/// A duration such as `30s`, `1m30s` or `500ms`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|e| format!("`{text}`: {e}"))
}

/// A lease duration such as `15s` (whole seconds, at least 2).
fn parse_lease_duration(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime_serde::re::humantime::parse_duration(text)
        .map_err(|e| format!("`{text}`: {e}"))?;
    if d.as_secs() < 2 {
        return Err(format!("`{text}`: a lease lasts at least 2s"));
    }
    Ok(d)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EventScope {
    All,
    Related,
}

impl Global {
    /// The configuration to run and a name for it in errors.
    fn config(&self) -> Result<(Config, String, bool)> {
        let flags = KubedlFlags {
            meta_storage: self.meta_storage,
            event_storage: self.event_storage,
            region: self.region.clone(),
            sqlite_path: Some(self.db.display().to_string()),
        };
        if let Some(path) = &self.config {
            if flags.any_storage() {
                anyhow::bail!(
                    "--config {} cannot be combined with --meta-storage/--event-storage: describe the sinks in the file",
                    path.display()
                );
            }
            let mut config = Config::load(path)?;
            if let Some(r) = &self.region {
                config.region = Some(r.clone());
            }
            return Ok((config, path.display().to_string(), false));
        }
        let embedded = !flags.any_storage();
        let config = flags.to_config(|k| std::env::var(k).ok())?;
        Ok((config, "command-line flags".into(), embedded))
    }
}

/// mimalloc: the replay's records are made on the reading thread and freed
/// on the workers', where glibc's `malloc`/`free` took about a quarter of
/// kubesink's CPU (`docs/benchmarks.md`, "Hot paths" §13). Built to commit
/// arena memory as it is used (`.cargo/config.toml`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUBESINK_LOG").unwrap_or_else(|_| {
        // PostgreSQL notices a sink's statements raise (sqlx logs them) are
        // the sink's text, not kubesink's: off.
        tracing_subscriber::EnvFilter::new(
            "warn,kubesink=info,kubesink_host=info,sqlx::postgres::notice=off",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // kube and reqwest use rustls with the ring provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return app::ExitStatus::Error.into();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            app::ExitStatus::Error.into()
        }
    }
}

/// The error and its causes on one line, leaving out causes whose text the
/// message already contains (many errors repeat their source's text).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// `run` with its defaults (and its environment variables), for a command
/// line without a subcommand.
fn default_run() -> Command {
    let cmd = RunArgs::augment_args(clap::Command::new("run"));
    let args = cmd
        .try_get_matches_from(["run"])
        .and_then(|m| RunArgs::from_arg_matches(&m))
        .unwrap_or_else(|e| e.exit());
    Command::Run(Box::new(args))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command.unwrap_or_else(default_run) {
        Command::Replay { file, no_show } => replay_command(&cli.global, &file, no_show).await,
        Command::Run(args) => run_command(&cli.global, *args).await,
        Command::Show => {
            print!("{}", kubesink::show::render(&cli.global.db).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::History(args) => {
            let db = cli.global.db.to_string_lossy();
            print!("{}", kubesink::history::run(&db, &args).await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_command(global: &Global, args: RunArgs) -> Result<ExitCode> {
    let (config, origin, _) = global.config()?;
    let plan = config.resolve(&origin)?;
    let grace = args.shutdown_grace;
    let mut options = RunOptions::new(Cluster::Kubeconfig(args.kubeconfig));
    options.listen = Some(args.listen);
    options.namespace = args.namespace;
    options.checkpoint_configmap = (!args.no_checkpoint).then_some(args.checkpoint_configmap);
    options.events = EventFilter {
        related_only: args.events == EventScope::Related,
        namespaces: args.event_namespaces,
        involved_kinds: args.event_kinds,
        types: args.event_types,
        reasons: args.event_reasons,
    };
    if args.leader_elect {
        options.leader = Some(LeaderElection {
            lease_name: args.lease_name,
            lease_namespace: args.lease_namespace,
            lease_duration: args.lease_duration,
        });
    }
    let mut runtime = Runtime::start(&plan, options).await?;
    // SIGTERM or Ctrl-C, or the runtime stopping on its own (leadership lost).
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = runtime.ended() => {}
    }
    let mut stopped = runtime.shutdown(grace).await?;
    if let Some(shutdown) = &stopped.shutdown {
        for s in &shutdown.reports {
            eprintln!(
                "sink {}: {} delivered, {} failed, {} retries",
                s.name, s.delivered, s.failed, s.retries
            );
        }
        for (sink, left) in &shutdown.undelivered {
            eprintln!(
                "sink {sink}: {left} records left undelivered: the shutdown grace of {} ran out (--shutdown-grace)",
                humantime_serde::re::humantime::format_duration(stopped.grace)
            );
        }
    }
    if let Some(e) = stopped.error.take() {
        return Err(e.into());
    }
    Ok(stopped.exit_status().into())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn replay_command(global: &Global, file: &str, no_show: bool) -> Result<ExitCode> {
    let (config, origin, embedded) = global.config()?;
    let plan = config.resolve(&origin)?;
    let outcome = app::replay(&plan, ReplayInput::from_arg(file)).await?;
    let report = &outcome.input;
    for p in &report.problems {
        eprintln!("warning: {p}");
    }
    eprintln!(
        "replayed {} documents: {} records, {} ignored, {} problems, in {:.2?} ({:.0} records/s)",
        report.documents,
        report.entries,
        report.ignored,
        report.problems.len(),
        outcome.elapsed,
        report.entries as f64 / outcome.elapsed.as_secs_f64().max(1e-9)
    );
    for s in &outcome.sinks {
        eprintln!(
            "sink {}: {} delivered ({} superseded while queued), {} failed, {} retries, {} batches",
            s.name, s.delivered, s.coalesced, s.failed, s.retries, s.batches
        );
    }
    if embedded && !no_show {
        print!("{}", kubesink::show::render(Path::new(&global.db)).await?);
    }
    Ok(outcome.exit_status().into())
}
