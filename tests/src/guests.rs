//! Guest components for tests, built on demand.
//!
//! [`guest_wasm`] builds a workspace package for `wasm32-wasip2` with the
//! `guest` profile (once per package per test process) and returns the path
//! of its `.wasm`. The hostile guests live in `tests/guests/`: `spin` (loops
//! forever), `balloon` (allocates without end), `crash` (panics), `noisy`
//! (floods stdout) and the well-behaved `counter` (records what it receives
//! through the `sql` capability).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, bail};

/// The target guests are built for.
pub const GUEST_TARGET: &str = "wasm32-wasip2";

/// Package names of the test guests in `tests/guests/`.
pub const SPIN: &str = "kubesink-guest-spin";
/// Allocates 1 MiB blocks without end in `write`.
pub const BALLOON: &str = "kubesink-guest-balloon";
/// Panics in `write`.
pub const CRASH: &str = "kubesink-guest-crash";
/// Floods stdout in `write`.
pub const NOISY: &str = "kubesink-guest-noisy";
/// Records every entry's uid through `sql` (table `received`).
pub const COUNTER: &str = "kubesink-guest-counter";
/// Opens sql connections without end and keeps every handle.
pub const HOARDER: &str = "kubesink-guest-hoarder";

/// The workspace root (the parent of the `tests` crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Where `cargo build --target wasm32-wasip2 --profile guest -p <package>`
/// puts the component.
pub fn wasm_path(package: &str) -> PathBuf {
    target_dir()
        .join(GUEST_TARGET)
        .join("guest")
        .join(format!("{}.wasm", package.replace('-', "_")))
}

fn tool(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Fails loudly when the wasm target's standard library is not installed.
fn check_target_installed() -> anyhow::Result<()> {
    let rustc = tool("RUSTC", "rustc");
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .with_context(|| format!("running `{rustc} --print sysroot`"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let lib = sysroot.join("lib").join("rustlib").join(GUEST_TARGET);
    if !lib.is_dir() {
        bail!(
            "the Rust target {GUEST_TARGET} is not installed (no {}): run `rustup target add {GUEST_TARGET}`",
            lib.display()
        );
    }
    Ok(())
}

/// Builds guest package `package` (once per process) and returns the path
/// of its `.wasm` component.
pub fn guest_wasm(package: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    // One build at a time; a poisoned lock only means another test panicked.
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(package) {
        return Ok(path.clone());
    }
    check_target_installed()?;
    let cargo = tool("CARGO", "cargo");
    let out = Command::new(&cargo)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .args([
            "build",
            "--target",
            GUEST_TARGET,
            "--profile",
            "guest",
            "-p",
            package,
        ])
        .output()
        .with_context(|| format!("running `{cargo} build` for guest {package}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "building guest {package} for {GUEST_TARGET} failed ({}):\n{}",
            out.status,
            tail.join("\n")
        );
    }
    let path = wasm_path(package);
    if !path.is_file() {
        bail!(
            "building guest {package} succeeded but {} does not exist (is it a cdylib?)",
            path.display()
        );
    }
    built.insert(package.to_owned(), path.clone());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_path_uses_the_crate_file_name() {
        let p = wasm_path("kubesink-guest-spin");
        assert!(
            p.ends_with("wasm32-wasip2/guest/kubesink_guest_spin.wasm"),
            "{p:?}"
        );
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml"))
            .expect("workspace Cargo.toml");
        assert!(manifest.contains("[workspace]"));
    }
}
