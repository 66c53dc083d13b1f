//! kubesink's own namespace: where its Lease (leader election) and the
//! ConfigMaps holding sink modules live. One function, used by everyone
//! who needs it, so they all agree.

use std::path::Path;

/// The file Kubernetes mounts into every pod with a service account token.
pub(crate) const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The environment variable a Deployment sets from the downward API
/// (`fieldRef: metadata.namespace`).
pub(crate) const POD_NAMESPACE_ENV: &str = "POD_NAMESPACE";

/// kubesink's own namespace: `POD_NAMESPACE` when set and not empty, else
/// the service account's namespace file (in a pod), else the namespace of
/// the client's kubeconfig context (`default` when it names none).
pub fn own_namespace(client: &kube::Client) -> String {
    pick(
        std::env::var(POD_NAMESPACE_ENV).ok(),
        Path::new(SERVICE_ACCOUNT_NAMESPACE_FILE),
        client.default_namespace(),
    )
}

/// The rule of [`own_namespace`], with its inputs given.
fn pick(env: Option<String>, file: &Path, kubeconfig: &str) -> String {
    if let Some(ns) = env.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()) {
        return ns;
    }
    if let Ok(text) = std::fs::read_to_string(file) {
        let ns = text.trim();
        if !ns.is_empty() {
            return ns.to_owned();
        }
    }
    kubeconfig.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_wins_then_file_then_kubeconfig() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("namespace");
        std::fs::write(&file, "from-file\n").expect("write");
        assert_eq!(pick(Some("from-env".into()), &file, "kc"), "from-env");
        assert_eq!(pick(Some("  ".into()), &file, "kc"), "from-file");
        assert_eq!(pick(None, &file, "kc"), "from-file");
        let missing = dir.path().join("missing");
        assert_eq!(pick(None, &missing, "kc"), "kc");
        std::fs::write(&file, "").expect("write");
        assert_eq!(pick(None, &file, "kc"), "kc");
    }
}
