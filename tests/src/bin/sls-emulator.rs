//! Runs an SLS emulator for demos: `just sls-emulator` (or
//! `cargo run -p kubesink-tests --bin sls-emulator`).
//!
//! Settings come from the environment, named like KubeDL's: `SLS_PROJECT`
//! (default `kubesink`), `SLS_LOG_STORE` (default `events`), `SLS_KEY_ID` and
//! `SLS_KEY_SECRET` (defaults `kubesink-test-key` / `kubesink-test-secret`),
//! `SLS_EMULATOR_LISTEN` (default `127.0.0.1:9000`). It prints the
//! `SLS_*` variables that point kubesink at it, then a line per request, and
//! a summary of stored logs every 10 s.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use kubesink_tests::sls::{self, EmulatorConfig};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let project = env_or("SLS_PROJECT", "kubesink");
    let logstore = env_or("SLS_LOG_STORE", "events");
    let key_id = env_or("SLS_KEY_ID", "kubesink-test-key");
    let secret = env_or("SLS_KEY_SECRET", "kubesink-test-secret");
    let listen: SocketAddr = env_or("SLS_EMULATOR_LISTEN", "127.0.0.1:9000")
        .parse()
        .context("SLS_EMULATOR_LISTEN is not an address like 127.0.0.1:9000")?;
    let mut config = EmulatorConfig::default()
        .key(&key_id, &secret)
        .listen(listen);
    config.projects.clear();
    let config = config.logstore(&project, &logstore);
    let emu = sls::start(config).await?;
    println!("SLS emulator listening; point kubesink at it with:");
    println!("  export SLS_ENDPOINT={}", emu.endpoint());
    println!("  export SLS_PROJECT={project} SLS_LOG_STORE={logstore}");
    println!("  export SLS_KEY_ID={key_id} SLS_KEY_SECRET=<the secret you set>");
    let mut seen = 0;
    let mut last_summary = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let requests = emu.requests();
        for r in requests.iter().skip(seen) {
            println!(
                "{} {}{} -> {} {} ({} bytes)",
                r.method,
                r.path,
                if r.query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", r.query)
                },
                r.status,
                r.error_code.as_deref().unwrap_or(""),
                r.body_len
            );
        }
        seen = requests.len();
        if last_summary.elapsed() >= Duration::from_secs(10) {
            last_summary = tokio::time::Instant::now();
            println!(
                "stored: {} logs in {} groups in {project}/{logstore}",
                emu.logs(&project, &logstore).len(),
                emu.group_count(&project, &logstore)
            );
        }
    }
    Ok(())
}
