//! SLS: the emulator checked against the official Python SDK, and the sls
//! sink through the real host into the emulator.

use std::path::PathBuf;

use anyhow::{Context as _, bail, ensure};
use kubesink_tests::sls::{self, EmulatorConfig, python_sdk};
use serde_json::Value;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Puts logs into the emulator with the unchanged `aliyun-log-python-sdk`
/// (lz4, zstd and raw bodies; lb and route paths), reads them back with
/// ListShards/GetCursor/PullLogs in lz4, zstd and raw, and checks the SDK's
/// view of refused requests. Installs the SDK into a cached venv (PyPI).
#[tokio::test]
async fn sls_emulator_conforms_to_python_sdk() -> anyhow::Result<()> {
    let python = tokio::task::spawn_blocking(python_sdk::python)
        .await?
        .context("installing aliyun-log-python-sdk")?;
    let emu = sls::start(EmulatorConfig::default()).await?;
    let key = &emu.config().keys[0];
    let script = workspace().join("tests/sls-conformance/conformance.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args([&emu.endpoint(), "kubesink", "events", &key.id, &key.secret])
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        out.status.success(),
        "conformance.py failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).context("conformance.py output")?;

    // Every put came back, in every response encoding, with its group
    // metadata and contents; route keys chose their shards.
    let tags = ["lz4", "zstd", "raw", "route-low", "route-high"];
    for mode in ["pulled_lz4", "pulled_zstd", "pulled_raw"] {
        let shards = result[mode].as_array().context("shards array")?;
        ensure!(
            shards.len() == 2,
            "{mode}: expected 2 shards, got {shards:?}"
        );
        let mut seen = Vec::new();
        for shard in shards {
            ensure!(
                shard["end_cursor_matches"] == true,
                "{mode}: read did not end at the end cursor"
            );
            for log in shard["logs"].as_array().context("logs")? {
                let tag = log["tag"].as_str().context("tag")?.to_string();
                ensure!(log["__topic__"] == "conformance", "{mode}: topic in {log}");
                ensure!(
                    log["__source__"] == format!("sdk-{tag}"),
                    "{mode}: source in {log}"
                );
                let i = log["i"].as_str().context("i")?;
                ensure!(
                    log["msg"] == format!("hello 世界 {i}"),
                    "{mode}: msg in {log}"
                );
                ensure!(
                    log["__time__"] == 1_700_000_000 + i.parse::<u64>()?,
                    "{mode}: time in {log}"
                );
                if tag == "route-low" {
                    ensure!(
                        shard["shard"] == 0,
                        "route-low landed in shard {}",
                        shard["shard"]
                    );
                }
                if tag == "route-high" {
                    ensure!(
                        shard["shard"] == 1,
                        "route-high landed in shard {}",
                        shard["shard"]
                    );
                }
                seen.push(tag);
            }
        }
        for tag in tags {
            let n = seen.iter().filter(|t| *t == tag).count();
            ensure!(n == 3, "{mode}: {n} logs tagged {tag}, want 3");
        }
    }
    let refused = |name: &str, code: &str, status: u64| -> anyhow::Result<()> {
        let got = &result[name];
        ensure!(
            got["code"] == code && got["status"] == status,
            "{name}: got {got}"
        );
        ensure!(
            got["request_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: no x-log-requestid seen by the SDK"
        );
        Ok(())
    };
    refused("wrong_secret", "SignatureNotMatch", 401)?;
    refused("unknown_key", "InvalidAccessKeyId", 401)?;
    refused("unknown_logstore", "LogStoreNotExist", 404)?;

    // The emulator's own view agrees, and saw what the SDK sent.
    ensure!(emu.logs("kubesink", "events").len() == 15, "stored logs");
    let puts: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.status == 200)
        .collect();
    ensure!(puts.len() == 5, "successful PutLogs: {}", puts.len());
    let compress: Vec<_> = puts
        .iter()
        .map(|r| r.header("x-log-compresstype"))
        .collect();
    ensure!(
        compress == [Some("lz4"), Some("zstd"), None, Some("lz4"), Some("lz4")],
        "compression types sent: {compress:?}"
    );
    for r in &puts {
        if r.header("host") != Some("kubesink.127.0.0.1") {
            bail!(
                "Host header {:?}, want kubesink.127.0.0.1",
                r.header("host")
            );
        }
    }
    Ok(())
}
