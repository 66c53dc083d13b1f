//! kubesink's OCI image, built without a container engine by
//! `scripts/image.sh` (umoci, built from Go modules by
//! `tests/controlplane/build-tool.sh umoci`), unpacked by umoci and run
//! from its own filesystem: the image's root becomes the process's root
//! (`unshare --root`, in a user namespace, as uid 65532), so the binary,
//! the libraries it loads and the bundled sinks are the image's and
//! nothing of this machine's.
//!
//! The image is built from this test run's kubesink binary and sinks (the
//! debug glibc build plus the libraries it links; `just image` builds the
//! release image from a static musl binary instead: a full release build
//! of its own). `KUBESINK_TEST_IMAGE=<layout>:<tag>` tests an image built
//! beforehand, e.g. `just image`'s.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use anyhow::{Context as _, Result, ensure};
use kubesink_tests::binary::kubesink_binary;
use kubesink_tests::guests;
use serde_json::{Value, json};

use crate::replay;

/// An image built beforehand, as `<layout>:<tag>`.
const IMAGE_ENV: &str = "KUBESINK_TEST_IMAGE";
/// The user the image runs as.
const USER: &str = "65532";

/// Runs `program args` and fails naming it, with its stderr, if it fails.
async fn run(program: &Path, args: &[&str]) -> Result<String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    ensure!(
        output.status.success(),
        "{} {} failed ({}):\n{}",
        program.display(),
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// The last non-empty line of a script's stdout.
fn last_line(stdout: &str) -> Result<String> {
    stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .context("the script printed nothing")
}

async fn umoci() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("KUBESINK_UMOCI") {
        return Ok(PathBuf::from(path));
    }
    let script = guests::workspace_root().join("tests/controlplane/build-tool.sh");
    let dir = last_line(
        &run(
            Path::new("bash"),
            &[script.to_str().context("path")?, "umoci"],
        )
        .await?,
    )?;
    Ok(PathBuf::from(dir).join("umoci"))
}

/// `<layout>:<tag>` of the image under test: [`IMAGE_ENV`], else built
/// into `dir` from this run's binary and sinks.
async fn image(dir: &Path) -> Result<String> {
    if let Ok(image) = std::env::var(IMAGE_ENV) {
        return Ok(image);
    }
    let binary = kubesink_binary()?;
    let mysql = guests::guest_wasm("kubesink-sink-mysql")?;
    let sinks = mysql.parent().context("sink dir")?;
    for other in [
        "kubesink-sink-sls",
        "kubesink-sink-webhook",
        "kubesink-sink-kafka",
    ] {
        ensure!(
            guests::guest_wasm(other)?.parent() == Some(sinks),
            "the sinks were built into different directories"
        );
    }
    let script = guests::workspace_root().join("scripts/image.sh");
    let out = dir.join("oci");
    let stdout = run(
        Path::new("bash"),
        &[
            script.to_str().context("path")?,
            "--binary",
            binary.to_str().context("path")?,
            "--sinks",
            sinks.to_str().context("path")?,
            "--out",
            out.to_str().context("path")?,
        ],
    )
    .await?;
    last_line(&stdout)
}

/// A blob of the layout, by digest (`sha256:<hex>`).
fn blob(layout: &Path, digest: &str) -> Result<Value> {
    let (algorithm, hex) = digest
        .split_once(':')
        .with_context(|| format!("digest {digest}"))?;
    let path = layout.join("blobs").join(algorithm).join(hex);
    let bytes = std::fs::read(&path).with_context(|| path.display().to_string())?;
    serde_json::from_slice(&bytes).with_context(|| path.display().to_string())
}

/// The manifest tagged `tag` in the layout's index, and its config.
fn manifest_and_config(layout: &Path, tag: &str) -> Result<(Value, Value)> {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let descriptor = index["manifests"]
        .as_array()
        .context("index.json manifests")?
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == json!(tag))
        .with_context(|| format!("no manifest tagged {tag} in {index}"))?;
    let manifest = blob(layout, descriptor["digest"].as_str().context("digest")?)?;
    let config = blob(
        layout,
        manifest["config"]["digest"].as_str().context("config")?,
    )?;
    Ok((manifest, config))
}

/// Runs `/usr/local/bin/kubesink args` with `rootfs` as its root, as uid
/// and gid 65532, in `/data`, with only `env`.
async fn run_in_image(rootfs: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    tokio::process::Command::new("unshare")
        .args([
            "--user",
            &format!("--map-user={USER}"),
            &format!("--map-group={USER}"),
        ])
        .arg(format!("--root={}", rootfs.display()))
        .arg("--wd=/data")
        .arg("/usr/local/bin/kubesink")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .context("running unshare (util-linux) to enter the image's filesystem")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_runs_kubesink_from_its_own_filesystem_and_replays_the_fixture() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let image = image(dir.path()).await?;
    let (layout, tag) = image
        .rsplit_once(':')
        .with_context(|| format!("{IMAGE_ENV} {image}: not <layout>:<tag>"))?;
    let layout = Path::new(layout);

    // The image's configuration: non-root, the entrypoint and command the
    // Deployment relies on (its args replace CMD).
    let (manifest, config) = manifest_and_config(layout, tag)?;
    let layers = manifest["layers"].as_array().context("layers")?;
    ensure!(
        layers.len() == 1
            && layers[0]["mediaType"] == json!("application/vnd.oci.image.layer.v1.tar+gzip"),
        "wanted one gzip layer: {manifest}"
    );
    ensure!(
        config["os"] == json!("linux") && config["architecture"] == json!("amd64"),
        "platform: {config}"
    );
    let c = &config["config"];
    ensure!(c["User"] == json!(format!("{USER}:{USER}")), "User: {c}");
    ensure!(
        c["Entrypoint"] == json!(["/usr/local/bin/kubesink"]),
        "Entrypoint: {c}"
    );
    ensure!(c["Cmd"] == json!(["run"]), "Cmd: {c}");
    ensure!(
        c["ExposedPorts"]
            .as_object()
            .is_some_and(|p| p.contains_key("8080/tcp")),
        "ExposedPorts: {c}"
    );
    ensure!(
        c["Env"].as_array().is_some_and(
            |e| e.contains(&json!("KUBESINK_CACHE_DIR=/var/cache/kubesink/components"))
        ),
        "Env: {c}"
    );

    // Its filesystem, unpacked by umoci (digests checked as it goes).
    let bundle = dir.path().join("bundle");
    let umoci = umoci().await?;
    run(
        &umoci,
        &[
            "unpack",
            "--rootless",
            "--image",
            &image,
            bundle.to_str().context("path")?,
        ],
    )
    .await?;
    let rootfs = bundle.join("rootfs");
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))?;
    ensure!(
        passwd.contains(&format!("nonroot:x:{USER}:{USER}:")),
        "/etc/passwd: {passwd}"
    );
    let sinks = rootfs.join("usr/share/kubesink/sinks");
    for file in [
        "kubesink_sink_mysql.wasm",
        "kubesink_sink_sls.wasm",
        "kubesink_sink_webhook.wasm",
        "kubesink_sink_kafka.wasm",
    ] {
        let bytes =
            std::fs::read(sinks.join(file)).with_context(|| format!("{file} in the image"))?;
        ensure!(bytes.starts_with(b"\0asm"), "{file} is not WebAssembly");
    }

    // The working directory of the runs (the replay's input and output).
    let work = rootfs.join("data");
    std::fs::create_dir_all(&work)?;

    let version = run_in_image(&rootfs, &["--version"], &[]).await?;
    let stdout = String::from_utf8_lossy(&version.stdout);
    ensure!(
        version.status.success()
            && stdout.trim() == format!("kubesink {}", env!("CARGO_PKG_VERSION")),
        "kubesink --version in the image: {} {stdout:?} {}",
        version.status,
        String::from_utf8_lossy(&version.stderr)
    );

    // The fixture replayed into SQLite by the embedded default (the mysql
    // sink as `builtin:mysql`, found in the image), rows as replay.rs
    // checks them.
    std::fs::copy(replay::fixture("watch.json"), work.join("watch.json"))?;
    let env = [
        ("HOME", "/home/nonroot"),
        ("KUBESINK_CACHE_DIR", "/tmp/components"),
    ];
    let args = ["--db=/data/kubesink.db", "replay", "/data/watch.json"];
    let replayed = run_in_image(&rootfs, &args, &env).await?;
    ensure!(
        replayed.status.success(),
        "kubesink replay in the image: {}\n{}",
        replayed.status,
        String::from_utf8_lossy(&replayed.stderr)
    );
    let rows = replay::sqlite_rows(&work.join("kubesink.db")).await?;
    replay::check_expected(&rows, false)?;

    // The sink came from the image: without it the same run fails, naming
    // where it looked.
    std::fs::remove_file(sinks.join("kubesink_sink_mysql.wasm"))?;
    let args = ["--db=/data/again.db", "replay", "/data/watch.json"];
    let missing = run_in_image(&rootfs, &args, &env).await?;
    let stderr = String::from_utf8_lossy(&missing.stderr);
    ensure!(
        !missing.status.success()
            && stderr.contains("kubesink_sink_mysql.wasm")
            && stderr.contains("/usr/share/kubesink/sinks"),
        "without the image's mysql sink: {} {stderr}",
        missing.status
    );
    Ok(())
}
