//! A real Kubernetes control plane (etcd and kube-apiserver) for tests and
//! demos, started the way controller-runtime's envtest does.
//!
//! [`start`] builds the binaries if needed (`tests/controlplane/build.sh`,
//! cached under `~/.cache/kubesink/controlplane/<k8s>-<etcd>/bin`), creates a
//! temporary directory holding its own CA, a serving certificate for
//! `127.0.0.1`/`localhost`, a service-account signing key pair, an admin
//! client certificate (`O=system:masters`) and a kubeconfig file, then starts
//! etcd and kube-apiserver (RBAC authorization) on free loopback ports and
//! waits until `/readyz` answers `ok`. There is no kubelet and no controller
//! manager: tests create Pods and set their status through the API.
//!
//! The API server can be stopped and started again while etcd keeps the
//! data ([`Cluster::stop_apiserver`], [`Cluster::start_apiserver`]).
//! Dropping the [`Cluster`] kills both processes and removes the directory.
//! Process output goes to `etcd.log` and `kube-apiserver.log` in that
//! directory; a start failure reports the last lines of the log.
//!
//! `KUBESINK_CONTROLPLANE_BIN` may name a directory that already holds
//! `etcd` and `kube-apiserver`, skipping the build script.

use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::config::{
    AuthInfo, Cluster as KubeconfigCluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo,
    NamedCluster, NamedContext,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long etcd and kube-apiserver may take to become ready (the machine
/// may be busy with other builds).
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The service CIDR given to kube-apiserver (envtest's default).
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";

/// Environment variable naming a directory with prebuilt `etcd` and
/// `kube-apiserver` binaries; when set, the build script is not run.
pub const BIN_DIR_ENV: &str = "KUBESINK_CONTROLPLANE_BIN";

/// How many log lines a start failure quotes.
const LOG_TAIL_LINES: usize = 40;

/// The name of the admin user in the kubeconfig files.
const ADMIN_USER: &str = "kubesink-admin";

/// Errors starting, using or stopping the test control plane.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The build script could not be run at all.
    #[error("running the control-plane build script {script}: {source}")]
    BuildSpawn {
        /// The script.
        script: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The build script failed.
    #[error("the control-plane build script {script} failed ({status}):\n{stderr_tail}")]
    Build {
        /// The script.
        script: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines it wrote to stderr.
        stderr_tail: String,
    },
    /// A binary is missing from the binary directory.
    #[error("{binary} is missing or not executable in {dir}")]
    MissingBinary {
        /// `etcd` or `kube-apiserver`.
        binary: &'static str,
        /// The directory searched.
        dir: PathBuf,
    },
    /// The temporary directory could not be created.
    #[error("creating the cluster's temporary directory: {0}")]
    TempDir(io::Error),
    /// A file in the cluster directory could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A certificate or key could not be generated.
    #[error("generating the {what}: {source}")]
    Certificate {
        /// Which certificate or key.
        what: String,
        /// The cause.
        source: rcgen::Error,
    },
    /// No free loopback port could be reserved.
    #[error("reserving a free loopback port for {purpose}: {source}")]
    Port {
        /// What the port is for.
        purpose: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// A process could not be spawned.
    #[error("starting {component} from {binary}: {source}")]
    Spawn {
        /// `etcd` or `kube-apiserver`.
        component: &'static str,
        /// The binary.
        binary: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A process exited before it became ready.
    #[error(
        "{component} exited ({status}) before it was ready; last lines of {}:\n{tail}",
        log.display()
    )]
    Exited {
        /// `etcd` or `kube-apiserver`.
        component: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// A process did not become ready in time.
    #[error(
        "{component} was not ready within {timeout:?} (last check: {last_error}); last lines of {}:\n{tail}",
        log.display()
    )]
    NotReady {
        /// `etcd` or `kube-apiserver`.
        component: &'static str,
        /// How long was waited.
        timeout: Duration,
        /// The last readiness check's failure.
        last_error: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// The API server was asked to start while it runs.
    #[error("kube-apiserver is already running")]
    AlreadyRunning,
    /// A CustomResourceDefinition could not be read, created or made ready.
    #[error("installing the CustomResourceDefinition from {path}: {message}")]
    Crd {
        /// The YAML file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// A kubeconfig could not be serialized or turned into a client.
    #[error("building a client for user {user} from kubeconfig {path}: {message}")]
    Client {
        /// The kubeconfig user.
        user: String,
        /// The kubeconfig file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}

type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// A running control plane: etcd and kube-apiserver on loopback ports, with
/// its own PKI in a temporary directory. Dropping it stops both processes
/// and removes the directory.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin_dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    etcd_client_url: String,
    apiserver_port: u16,
    kubeconfig_path: PathBuf,
    admin_config: Config,
    admin_client: Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir.path())
            .field("etcd", &self.etcd_client_url)
            .field("apiserver", &self.base_url())
            .field("apiserver_running", &self.apiserver.is_some())
            .finish()
    }
}

/// Builds the control plane if needed, then starts etcd and kube-apiserver
/// and waits until the API server is ready and the `default` namespace
/// exists.
pub async fn start() -> Result<Cluster> {
    install_crypto_provider();
    let bin_dir = ensure_binaries().await?;
    Cluster::start_with_binaries(bin_dir).await
}

/// Installs rustls' ring crypto provider as the process default (kube's
/// client needs one); does nothing if a provider is already installed.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The build script, `tests/controlplane/build.sh`.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/build.sh")
}

/// Returns the directory holding `etcd` and `kube-apiserver`, running the
/// build script when they are not cached yet (minutes on a cold cache).
pub async fn ensure_binaries() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        check_binaries(&dir)?;
        return Ok(dir);
    }
    let script = build_script();
    let planned = run_build_script(&script, &["--print-dir"]).await?;
    if check_binaries(&planned).is_ok() {
        return Ok(planned);
    }
    eprintln!(
        "kubesink-tests: building kube-apiserver and etcd into {} (first run; takes minutes)",
        planned.display()
    );
    let dir = run_build_script(&script, &[]).await?;
    check_binaries(&dir)?;
    Ok(dir)
}

/// Runs the build script and returns the directory it prints last.
async fn run_build_script(script: &Path, args: &[&str]) -> Result<PathBuf> {
    let output = tokio::process::Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| ClusterError::BuildSpawn {
            script: script.to_owned(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().rev().find(|line| !line.trim().is_empty());
    match (output.status.success(), last) {
        (true, Some(dir)) => Ok(PathBuf::from(dir.trim())),
        _ => Err(ClusterError::Build {
            script: script.to_owned(),
            status: output.status,
            stderr_tail: tail_lines(&String::from_utf8_lossy(&output.stderr), LOG_TAIL_LINES),
        }),
    }
}

fn check_binaries(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for binary in ["etcd", "kube-apiserver"] {
        let executable = fs::metadata(dir.join(binary))
            .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !executable {
            return Err(ClusterError::MissingBinary {
                binary,
                dir: dir.to_owned(),
            });
        }
    }
    Ok(())
}

/// Paths of the files the control plane is started with, all inside the
/// cluster directory.
struct Files {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_public_key: PathBuf,
    sa_private_key: PathBuf,
    etcd_data: PathBuf,
    etcd_log: PathBuf,
    apiserver_log: PathBuf,
    apiserver_cert_dir: PathBuf,
}

impl Files {
    fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            sa_public_key: dir.join("sa.pub"),
            sa_private_key: dir.join("sa.key"),
            etcd_data: dir.join("etcd-data"),
            etcd_log: dir.join("etcd.log"),
            apiserver_log: dir.join("kube-apiserver.log"),
            apiserver_cert_dir: dir.join("apiserver-certs"),
        }
    }
}

impl Cluster {
    /// Starts a control plane from the binaries in `bin_dir` (see
    /// [`ensure_binaries`]).
    pub async fn start_with_binaries(bin_dir: PathBuf) -> Result<Self> {
        install_crypto_provider();
        check_binaries(&bin_dir)?;
        let dir = tempfile::Builder::new()
            .prefix("kubesink-cluster-")
            .tempdir()
            .map_err(ClusterError::TempDir)?;
        let files = Files::in_dir(dir.path());

        // PKI: a CA, the API server's serving certificate, the
        // service-account signing key pair and the admin client certificate.
        let ca = new_ca()?;
        write_file(&files.ca_cert, ca.cert_pem.as_bytes())?;
        let serving = issue_cert(
            &ca.issuer,
            "kube-apiserver",
            None,
            &[
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "10.0.0.1",
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        write_file(&files.serving_cert, serving.cert_pem.as_bytes())?;
        write_file(&files.serving_key, serving.key_pem.as_bytes())?;
        let sa_key = KeyPair::generate().map_err(|source| ClusterError::Certificate {
            what: "service-account signing key".into(),
            source,
        })?;
        write_file(&files.sa_private_key, sa_key.serialize_pem().as_bytes())?;
        write_file(&files.sa_public_key, sa_key.public_key_pem().as_bytes())?;

        let [etcd_client_port, etcd_peer_port, apiserver_port] =
            free_ports(["etcd clients", "etcd peers", "kube-apiserver"])?;
        let etcd_client_url = format!("http://127.0.0.1:{etcd_client_port}");
        let base_url = format!("https://127.0.0.1:{apiserver_port}");

        let admin = issue_cert(
            &ca.issuer,
            ADMIN_USER,
            Some("system:masters"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let admin_auth = write_client_cert(dir.path(), ADMIN_USER, &admin)?;
        let kubeconfig_path = dir.path().join("kubeconfig");
        let admin_config = write_kubeconfig(
            &kubeconfig_path,
            &base_url,
            &files.ca_cert,
            ADMIN_USER,
            admin_auth,
        )
        .await?;
        let admin_client = client_from(&admin_config, ADMIN_USER, &kubeconfig_path)?;

        let mut cluster = Cluster {
            bin_dir,
            ca: ca.issuer,
            etcd: None,
            apiserver: None,
            etcd_client_url,
            apiserver_port,
            kubeconfig_path,
            admin_config,
            admin_client,
            dir,
        };
        cluster.start_etcd(etcd_client_port, etcd_peer_port).await?;
        cluster.start_apiserver().await?;
        Ok(cluster)
    }

    /// The kubeconfig file for the admin user (`O=system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// etcd's client URL, `http://127.0.0.1:<port>`.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_client_url
    }

    /// The cluster's temporary directory (certificates, kubeconfig files,
    /// process logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (PEM file) that signed the serving and client
    /// certificates.
    pub fn ca_cert_path(&self) -> PathBuf {
        Files::in_dir(self.dir.path()).ca_cert
    }

    /// kube-apiserver's log file (all runs, appended).
    pub fn apiserver_log_path(&self) -> PathBuf {
        Files::in_dir(self.dir.path()).apiserver_log
    }

    /// etcd's log file.
    pub fn etcd_log_path(&self) -> PathBuf {
        Files::in_dir(self.dir.path()).etcd_log
    }

    /// A client authenticated as the admin user (`O=system:masters`, which
    /// RBAC allows everything). Clones share one connection pool; it
    /// reconnects after an API server restart.
    pub fn client(&self) -> Client {
        self.admin_client.clone()
    }

    /// The admin user's client configuration, for building a fresh client.
    pub fn admin_config(&self) -> Config {
        self.admin_config.clone()
    }

    /// Issues a client certificate for `user` (the subject's CN), in
    /// `group` if given (the subject's O; one group, as rcgen writes one
    /// value per attribute), with no roles unless bound; writes a
    /// kubeconfig for it and returns the kubeconfig's path.
    pub async fn kubeconfig_for_user(&self, user: &str, group: Option<&str>) -> Result<PathBuf> {
        let cert = issue_cert(
            &self.ca,
            user,
            group,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let auth = write_client_cert(self.dir.path(), user, &cert)?;
        let path = self
            .dir
            .path()
            .join(format!("{}.kubeconfig", file_stem(user)));
        write_kubeconfig(&path, &self.base_url(), &self.ca_cert_path(), user, auth).await?;
        Ok(path)
    }

    /// A client authenticated by a client certificate for `user`, in
    /// `group` if given (see [`Cluster::kubeconfig_for_user`]).
    pub async fn client_for_user(&self, user: &str, group: Option<&str>) -> Result<Client> {
        let path = self.kubeconfig_for_user(user, group).await?;
        let config = config_from_file(&path, user).await?;
        client_from(&config, user, &path)
    }

    /// A client authenticated by a bearer token (e.g. one from a
    /// ServiceAccount's TokenRequest); `name` names its kubeconfig file.
    pub async fn client_with_token(&self, name: &str, token: &str) -> Result<Client> {
        let auth = AuthInfo {
            token: Some(token.to_owned().into()),
            ..AuthInfo::default()
        };
        let path = self
            .dir
            .path()
            .join(format!("{}.kubeconfig", file_stem(name)));
        let config =
            write_kubeconfig(&path, &self.base_url(), &self.ca_cert_path(), name, auth).await?;
        client_from(&config, name, &path)
    }

    /// Creates the CustomResourceDefinition in the YAML file `path` with
    /// the admin client and waits until it is Established and its storage
    /// version is served (listing it answers), at most [`READY_TIMEOUT`].
    pub async fn install_crd(&self, path: &Path) -> Result<CustomResourceDefinition> {
        let crd_error = |message: String| ClusterError::Crd {
            path: path.to_owned(),
            message,
        };
        let text = fs::read_to_string(path).map_err(|e| crd_error(format!("reading: {e}")))?;
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&text).map_err(|e| crd_error(format!("parsing: {e}")))?;
        let name = crd
            .metadata
            .name
            .clone()
            .ok_or_else(|| crd_error("metadata.name is missing".into()))?;
        let version = crd
            .spec
            .versions
            .iter()
            .find(|v| v.storage)
            .map(|v| v.name.clone())
            .ok_or_else(|| crd_error("no version has storage: true".into()))?;
        let crds = Api::<CustomResourceDefinition>::all(self.client());
        crds.create(&PostParams::default(), &crd)
            .await
            .map_err(|e| crd_error(format!("creating {name}: {e}")))?;
        let established = tokio::time::timeout(
            READY_TIMEOUT,
            await_condition(crds, &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| crd_error(format!("{name} not Established within {READY_TIMEOUT:?}")))?
        .map_err(|e| crd_error(format!("watching {name}: {e}")))?
        .ok_or_else(|| crd_error(format!("{name} was deleted while waiting for it")))?;

        // Established can precede the resource being served by a moment.
        let names = &established.spec.names;
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&established.spec.group, &version, &names.kind),
            &names.plural,
        );
        let objects = Api::<DynamicObject>::all_with(self.client(), &resource);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match objects.list(&ListParams::default().limit(1)).await {
                Ok(_) => return Ok(established),
                Err(error) if Instant::now() >= deadline => {
                    return Err(crd_error(format!(
                        "{name} is Established but listing {}/{version} {} fails: {error}",
                        established.spec.group, names.plural
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Whether kube-apiserver is running (it has not been stopped and has
    /// not exited).
    pub fn apiserver_running(&mut self) -> bool {
        match self.apiserver.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills kube-apiserver (SIGKILL, as a crash would) and waits for it
    /// to exit; etcd keeps running and keeps the data. Does nothing if it
    /// is not running.
    pub fn stop_apiserver(&mut self) {
        if let Some(child) = self.apiserver.take() {
            kill_and_wait(child);
        }
    }

    /// Starts kube-apiserver (again) on the same port with the same
    /// certificates and etcd, and waits until `/readyz` is `ok` and the
    /// `default` namespace exists.
    pub async fn start_apiserver(&mut self) -> Result<()> {
        if self.apiserver_running() {
            return Err(ClusterError::AlreadyRunning);
        }
        self.stop_apiserver();
        let files = Files::in_dir(self.dir.path());
        let port = self.apiserver_port;
        let args = vec![
            format!("--etcd-servers={}", self.etcd_client_url),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--cert-dir={}", files.apiserver_cert_dir.display()),
            format!("--tls-cert-file={}", files.serving_cert.display()),
            format!("--tls-private-key-file={}", files.serving_key.display()),
            format!("--client-ca-file={}", files.ca_cert.display()),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer=https://127.0.0.1:{port}/"),
            format!(
                "--service-account-key-file={}",
                files.sa_public_key.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                files.sa_private_key.display()
            ),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            "--allow-privileged=true".into(),
            // As envtest: without a controller manager no default
            // ServiceAccount exists, which this plugin would require.
            "--disable-admission-plugins=ServiceAccount".into(),
        ];
        let child = spawn(
            "kube-apiserver",
            &self.bin_dir.join("kube-apiserver"),
            &args,
            &files.apiserver_log,
        )?;
        self.apiserver = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = self.admin_client.clone();
        loop {
            if let Some(child) = self.apiserver.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.apiserver = None;
                return Err(ClusterError::Exited {
                    component: "kube-apiserver",
                    status,
                    tail: read_tail(&files.apiserver_log),
                    log: files.apiserver_log,
                });
            }
            let last_error = match apiserver_ready(&client).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                self.stop_apiserver();
                return Err(ClusterError::NotReady {
                    component: "kube-apiserver",
                    timeout: READY_TIMEOUT,
                    last_error,
                    tail: read_tail(&files.apiserver_log),
                    log: files.apiserver_log,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn start_etcd(&mut self, client_port: u16, peer_port: u16) -> Result<()> {
        let files = Files::in_dir(self.dir.path());
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let args = vec![
            "--name=kubesink-test".into(),
            format!("--data-dir={}", files.etcd_data.display()),
            format!("--listen-client-urls={}", self.etcd_client_url),
            format!("--advertise-client-urls={}", self.etcd_client_url),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=kubesink-test={peer_url}"),
            // Test data need not survive a power cut; fsync dominates
            // etcd's latency on a busy disk.
            "--unsafe-no-fsync".into(),
        ];
        let child = spawn("etcd", &self.bin_dir.join("etcd"), &args, &files.etcd_log)?;
        self.etcd = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.etcd.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.etcd = None;
                return Err(ClusterError::Exited {
                    component: "etcd",
                    status,
                    tail: read_tail(&files.etcd_log),
                    log: files.etcd_log,
                });
            }
            let last_error = match etcd_healthy(client_port).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                return Err(ClusterError::NotReady {
                    component: "etcd",
                    timeout: READY_TIMEOUT,
                    last_error,
                    tail: read_tail(&files.etcd_log),
                    log: files.etcd_log,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills kube-apiserver, then etcd, and waits for both to exit. The
    /// directory is removed when the cluster is dropped.
    pub fn stop(&mut self) {
        self.stop_apiserver();
        if let Some(child) = self.etcd.take() {
            kill_and_wait(child);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kill_and_wait(mut child: Child) {
    // Errors mean the process has already exited and been reaped.
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn(component: &'static str, binary: &Path, args: &[String], log: &Path) -> Result<Child> {
    let open = || {
        File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| ClusterError::Write {
                path: log.to_owned(),
                source,
            })
    };
    let stdout = open()?;
    let stderr = open()?;
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|source| ClusterError::Spawn {
            component,
            binary: binary.to_owned(),
            source,
        })
}

/// One readiness check: `/readyz` says `ok` and the `default` namespace
/// (created by a post-start hook) exists.
async fn apiserver_ready(client: &Client) -> Result<(), String> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| format!("building the /readyz request: {e}"))?;
    let body = client
        .request_text(request)
        .await
        .map_err(|e| format!("GET /readyz: {e}"))?;
    if body.trim() != "ok" {
        return Err(format!("GET /readyz answered {:?}", body.trim()));
    }
    Api::<Namespace>::all(client.clone())
        .get("default")
        .await
        .map_err(|e| format!("GET namespace default: {e}"))?;
    Ok(())
}

/// One health check of etcd: `GET /health` answers `"health":"true"`.
async fn etcd_healthy(port: u16) -> Result<(), String> {
    let check = async {
        let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|e| format!("connecting to etcd: {e}"))?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .map_err(|e| format!("sending GET /health: {e}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("reading the /health answer: {e}"))?;
        let response = String::from_utf8_lossy(&response);
        if response.contains(r#""health":"true""#) {
            Ok(())
        } else {
            Err(format!("GET /health answered {:?}", response.trim()))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), check)
        .await
        .map_err(|_| "GET /health timed out".to_owned())?
}

/// Reserves distinct free loopback ports, one per purpose, by binding to
/// port 0. All listeners are held until every port is chosen: a port
/// released at once may be handed out again by the next bind (etcd was
/// once given one port for both its clients and its peers).
fn free_ports<const N: usize>(purposes: [&'static str; N]) -> Result<[u16; N]> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0; N];
    for (port, purpose) in ports.iter_mut().zip(purposes) {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .map_err(|source| ClusterError::Port { purpose, source })?;
        *port = listener
            .local_addr()
            .map_err(|source| ClusterError::Port { purpose, source })?
            .port();
        listeners.push(listener);
    }
    Ok(ports)
}

/// A CA certificate (PEM) and the issuer that signs with its key.
struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, both PEM.
struct IssuedCert {
    cert_pem: String,
    key_pem: String,
}

fn cert_error(what: &str) -> impl FnOnce(rcgen::Error) -> ClusterError + '_ {
    move |source| ClusterError::Certificate {
        what: what.to_owned(),
        source,
    }
}

fn new_ca() -> Result<Ca> {
    let what = "cluster CA certificate";
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error(what))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kubesink-test-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(cert_error(what))?;
    let cert = params.self_signed(&key).map_err(cert_error(what))?;
    Ok(Ca {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    })
}

/// Issues a certificate signed by the CA: common name `common_name`
/// (the user name for client certificates), organization `group` (the
/// user's group), subject alternative names `sans` (IP addresses or DNS
/// names).
fn issue_cert(
    ca: &Issuer<'static, KeyPair>,
    common_name: &str,
    group: Option<&str>,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<IssuedCert> {
    let what = format!("certificate for {common_name}");
    let sans: Vec<String> = sans.iter().map(|san| (*san).to_owned()).collect();
    let mut params = CertificateParams::new(sans).map_err(cert_error(&what))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(group) = group {
        params
            .distinguished_name
            .push(DnType::OrganizationName, group);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(cert_error(&what))?;
    let cert = params.signed_by(&key, ca).map_err(cert_error(&what))?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A name usable as a file stem: anything but `[A-Za-z0-9._-]` becomes `_`.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes a client certificate and key next to each other and returns the
/// kubeconfig user entry referring to them.
fn write_client_cert(dir: &Path, user: &str, cert: &IssuedCert) -> Result<AuthInfo> {
    let stem = file_stem(user);
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    write_file(&cert_path, cert.cert_pem.as_bytes())?;
    write_file(&key_path, cert.key_pem.as_bytes())?;
    Ok(AuthInfo {
        client_certificate: Some(cert_path.display().to_string()),
        client_key: Some(key_path.display().to_string()),
        ..AuthInfo::default()
    })
}

/// Writes a kubeconfig with one cluster, one user and one context (the
/// current one) and returns the client configuration it yields.
async fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    user: &str,
    auth: AuthInfo,
) -> Result<Config> {
    let kubeconfig = Kubeconfig {
        clusters: vec![NamedCluster {
            name: "kubesink-test".into(),
            cluster: Some(KubeconfigCluster {
                server: Some(server.to_owned()),
                certificate_authority: Some(ca_cert.display().to_string()),
                ..KubeconfigCluster::default()
            }),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.to_owned(),
            auth_info: Some(auth),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: user.to_owned(),
            context: Some(Context {
                cluster: "kubesink-test".into(),
                user: Some(user.to_owned()),
                namespace: Some("default".into()),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(user.to_owned()),
        kind: Some("Config".into()),
        api_version: Some("v1".into()),
        ..Kubeconfig::default()
    };
    let yaml = serde_yaml::to_string(&kubeconfig).map_err(|e| ClusterError::Client {
        user: user.to_owned(),
        path: path.to_owned(),
        message: format!("serializing the kubeconfig: {e}"),
    })?;
    write_file(path, yaml.as_bytes())?;
    config_from_file(path, user).await
}

/// Reads a kubeconfig file back into a client configuration, so what the
/// harness uses is exactly what the file says.
async fn config_from_file(path: &Path, user: &str) -> Result<Config> {
    let client_error = |message: String| ClusterError::Client {
        user: user.to_owned(),
        path: path.to_owned(),
        message,
    };
    let kubeconfig =
        Kubeconfig::read_from(path).map_err(|e| client_error(format!("reading: {e}")))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| client_error(format!("loading: {e}")))
}

fn client_from(config: &Config, user: &str, path: &Path) -> Result<Client> {
    Client::try_from(config.clone()).map_err(|e| ClusterError::Client {
        user: user.to_owned(),
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    fs::write(path, contents).map_err(|source| ClusterError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The last lines of a log file, or a note saying why it could not be read.
fn read_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => tail_lines(&String::from_utf8_lossy(&bytes), LOG_TAIL_LINES),
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// The last `n` lines of `text`.
fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_keeps_the_last_lines() {
        assert_eq!(tail_lines("a\nb\nc\nd\n", 2), "c\nd");
        assert_eq!(tail_lines("a\nb", 5), "a\nb");
        assert_eq!(tail_lines("", 3), "");
    }

    #[test]
    fn file_stem_replaces_unsafe_characters() {
        assert_eq!(
            file_stem("system:serviceaccount:ns/x y"),
            "system_serviceaccount_ns_x_y"
        );
        assert_eq!(file_stem("reader-1.a_b"), "reader-1.a_b");
    }

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        // Many rounds: releasing each port before the next bind handed
        // out one port twice now and then.
        for _ in 0..200 {
            let ports = free_ports(["a", "b", "c"]).expect("ports");
            assert!(!ports.contains(&0));
            assert!(
                ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2],
                "the same port was handed out twice: {ports:?}"
            );
        }
        let [a] = free_ports(["rebind"]).expect("port");
        TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, a))).expect("rebind");
    }

    #[test]
    fn issued_client_cert_names_user_and_group() {
        install_crypto_provider();
        let ca = new_ca().expect("ca");
        let cert = issue_cert(
            &ca.issuer,
            "alice",
            Some("system:masters"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
        .expect("cert");
        assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        // The subject is DER inside the PEM; decode and look for the names.
        let der = pem_body(&cert.cert_pem);
        for needle in [&b"alice"[..], b"system:masters", b"kubesink-test-ca"] {
            assert!(
                der.windows(needle.len()).any(|w| w == needle),
                "{} missing from the certificate",
                String::from_utf8_lossy(needle)
            );
        }
    }

    #[tokio::test]
    async fn kubeconfig_round_trips_through_kube() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = new_ca().expect("ca");
        let ca_path = dir.path().join("ca.crt");
        write_file(&ca_path, ca.cert_pem.as_bytes()).expect("write ca");
        let cert = issue_cert(
            &ca.issuer,
            "bob",
            None,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
        .expect("cert");
        let auth = write_client_cert(dir.path(), "bob", &cert).expect("client cert");
        let path = dir.path().join("bob.kubeconfig");
        let config = write_kubeconfig(&path, "https://127.0.0.1:6443", &ca_path, "bob", auth)
            .await
            .expect("kubeconfig");
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(config.default_namespace, "default");
        assert_eq!(config.root_cert.as_ref().map(Vec::len), Some(1));
        let text = fs::read_to_string(&path).expect("read kubeconfig");
        assert!(text.contains("current-context: bob"), "{text}");
        Client::try_from(config).expect("client from kubeconfig");
    }

    /// Decodes a single-block PEM's base64 body.
    fn pem_body(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("PEM body is base64")
    }
}
