//! The official SLS Python SDK in a cached virtualenv, for the conformance
//! check (`tests/sls-conformance/conformance.py`).
//!
//! [`python`] returns the venv's interpreter, creating
//! `~/.cache/kubesink/venv-aliyun-log-<version>` (or under `$KUBESINK_CACHE`)
//! with `pip install aliyun-log-python-sdk==<version>` plus `lz4` and `zstd`
//! (for its compressed bodies) the first time, and reusing it after.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Pinned SDK version.
pub const SDK_VERSION: &str = "0.9.52";
/// Pinned compression modules the SDK imports.
const EXTRA: &[&str] = &["lz4==4.4.5", "zstd==1.5.7.2"];

/// Why the SDK could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum PythonSdkError {
    /// Neither `$KUBESINK_CACHE` nor `$HOME` is set.
    #[error("python sdk: neither KUBESINK_CACHE nor HOME is set; cannot place the virtualenv")]
    NoCacheDir,
    /// A command failed.
    #[error("python sdk: `{command}` failed: {detail}")]
    Command {
        /// What was run.
        command: String,
        /// Exit status and stderr.
        detail: String,
    },
}

/// Where the venv lives.
pub fn venv_dir() -> Result<PathBuf, PythonSdkError> {
    let cache = match std::env::var_os("KUBESINK_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").ok_or(PythonSdkError::NoCacheDir)?)
            .join(".cache/kubesink"),
    };
    Ok(cache.join(format!("venv-aliyun-log-{SDK_VERSION}")))
}

fn run(cmd: &mut Command) -> Result<(), PythonSdkError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| PythonSdkError::Command {
        command: command.clone(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PythonSdkError::Command {
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

fn ready(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", "import aliyun.log, lz4.block, zstd"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
}

/// The venv's `python`, with the SDK installed (installs it on first use;
/// needs PyPI then). Blocking: call from `spawn_blocking` in async code.
pub fn python() -> Result<PathBuf, PythonSdkError> {
    let dir = venv_dir()?;
    let python = dir.join("bin/python");
    if ready(&python) {
        return Ok(python);
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| PythonSdkError::Command {
            command: format!("mkdir -p {}", parent.display()),
            detail: e.to_string(),
        })?;
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&dir))?;
    let mut pip = Command::new(dir.join("bin/pip"));
    pip.args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("aliyun-log-python-sdk=={SDK_VERSION}"))
        .args(EXTRA);
    run(&mut pip)?;
    if ready(&python) {
        Ok(python)
    } else {
        Err(PythonSdkError::Command {
            command: format!(
                "{} -c 'import aliyun.log, lz4.block, zstd'",
                python.display()
            ),
            detail: "the SDK does not import after installing it".into(),
        })
    }
}
