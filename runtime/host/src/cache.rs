//! Compiling components, with a cache of compiled artifacts on disk.
//!
//! A cached file is named by the SHA-256 of the component's bytes and of
//! the engine's [`precompile_compatibility_hash`], so an engine with other
//! settings (or another wasmtime) never reads an artifact it cannot use. It
//! is written to a temporary file and renamed into place, so a reader never
//! sees half a file. Only files under that name are ever deserialized:
//! bytes that come from a sink's configuration are always compiled, never
//! loaded as machine code.
//!
//! [`precompile_compatibility_hash`]: wasmtime::Engine::precompile_compatibility_hash

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bumped when the way artifacts are produced changes.
const CACHE_VERSION: &[u8] = b"kubesink-host component cache v1\0";

/// Why bytes could not be turned into a component.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Not a WebAssembly binary at all.
    #[error("not a WebAssembly file (no `\\0asm` header)")]
    NotWasm,
    /// A core module rather than a component.
    #[error(
        "a core WebAssembly module, not a component (build for wasm32-wasip2, or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// The bytes look like a component but do not validate or compile.
    #[error("invalid or corrupt component: {0}")]
    Invalid(String),
}

/// How a component was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// No cache directory: compiled in memory.
    Uncached,
    /// Compiled and written to this file.
    Stored(PathBuf),
    /// Compiled, but the artifact could not be written (the reason is
    /// logged); the component is used anyway.
    StoreFailed,
    /// Loaded from this file without compiling.
    Hit(PathBuf),
}

/// Feeds a [`Hash`] into SHA-256, so the key does not depend on the
/// standard library's hasher.
struct ShaHasher<'a>(&'a mut Sha256);

impl Hasher for ShaHasher<'_> {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The cache file name for `bytes` compiled by `engine`.
pub(crate) fn cache_key(engine: &Engine, bytes: &[u8]) -> String {
    let mut sha = Sha256::new();
    sha.update(CACHE_VERSION);
    sha.update(Sha256::digest(bytes));
    engine
        .precompile_compatibility_hash()
        .hash(&mut ShaHasher(&mut sha));
    format!("{}.cwasm", hex::encode(sha.finalize()))
}

/// Checks the header: a component has `\0asm`, version 0x0d and layer 1.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), CompileError> {
    match bytes {
        [0, b'a', b's', b'm', _, _, 0, 0, ..] => Err(CompileError::CoreModule),
        [0, b'a', b's', b'm', _, _, _, _, ..] => Ok(()),
        _ => Err(CompileError::NotWasm),
    }
}

fn error_text(err: &wasmtime::Error) -> String {
    err.chain()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Compiles `bytes`, or loads the artifact cached under `cache_dir`.
/// Blocking (compilation takes CPU seconds): call it off the async runtime.
pub(crate) fn load_component(
    engine: &Engine,
    cache_dir: Option<&Path>,
    bytes: &[u8],
) -> Result<(Component, CacheOutcome), CompileError> {
    check_header(bytes)?;
    let Some(dir) = cache_dir else {
        let component =
            Component::new(engine, bytes).map_err(|e| CompileError::Invalid(error_text(&e)))?;
        return Ok((component, CacheOutcome::Uncached));
    };
    let path = dir.join(cache_key(engine, bytes));
    if path.is_file() {
        match deserialize_ours(engine, &path) {
            Ok(component) => return Ok((component, CacheOutcome::Hit(path))),
            Err(err) => {
                tracing::warn!(target: "kubesink::host", file = %path.display(), error = %error_text(&err), "cached component unusable; compiling again");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let serialized = engine
        .precompile_component(bytes)
        .map_err(|e| CompileError::Invalid(error_text(&e)))?;
    match write_atomically(dir, &path, &serialized) {
        Ok(()) => match deserialize_ours(engine, &path) {
            Ok(component) => Ok((component, CacheOutcome::Stored(path))),
            Err(err) => Err(CompileError::Invalid(error_text(&err))),
        },
        Err(err) => {
            tracing::warn!(target: "kubesink::host", file = %path.display(), error = %err, "cannot write the compiled component to the cache");
            let component =
                Component::new(engine, bytes).map_err(|e| CompileError::Invalid(error_text(&e)))?;
            Ok((component, CacheOutcome::StoreFailed))
        }
    }
}

/// Loads an artifact this module wrote.
#[allow(unsafe_code)]
fn deserialize_ours(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `path` is a file in our cache directory under a name derived
    // from the SHA-256 of the wasm bytes and the engine's compatibility hash;
    // only `load_component` writes such names, with the output of
    // `Engine::precompile_component` (temp file + rename, so never partial).
    // Anything else found there fails wasmtime's header and version checks or
    // was put there by someone who can already replace our binary.
    unsafe { Component::deserialize_file(engine, path) }
}

fn write_atomically(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_tells_module_from_component() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(CompileError::NotWasm)
        ));
        assert!(matches!(check_header(b"\0asm"), Err(CompileError::NotWasm)));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(CompileError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn key_depends_on_bytes_and_engine() {
        let engine = Engine::default();
        let a = cache_key(&engine, b"a");
        assert_eq!(a, cache_key(&engine, b"a"));
        assert_ne!(a, cache_key(&engine, b"b"));
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let other = Engine::new(&config).expect("engine");
        assert_ne!(a, cache_key(&other, b"a"));
        assert!(a.ends_with(".cwasm") && a.len() == 64 + 6);
    }

    #[test]
    fn corrupt_component_is_invalid() {
        let engine = Engine::default();
        let err = load_component(&engine, None, b"\0asm\x0d\0\x01\0garbage").expect_err("corrupt");
        assert!(matches!(err, CompileError::Invalid(_)), "{err:?}");
    }
}
