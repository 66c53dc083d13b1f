//! What normalization needs to know besides the object: the deploy region
//! (`--region`) and the training-job kinds to recognise, each with where its
//! replica specs live and the name of its main container.

/// A training-job kind (a custom resource such as KubeDL's `TFJob`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingKind {
    /// `apiVersion`, e.g. `training.kubedl.io/v1alpha1`.
    pub api_version: String,
    /// `kind`, e.g. `TFJob`.
    pub kind: String,
    /// Field under `spec` holding the map replica type → replica spec,
    /// e.g. `tfReplicaSpecs`.
    pub replica_specs: String,
    /// Name of the main container of its pods, e.g. `tensorflow`: a pod's
    /// image is this container's, else the first container's.
    pub default_container: String,
}

impl TrainingKind {
    /// A kind from its four names.
    pub fn new(
        api_version: &str,
        kind: &str,
        replica_specs: &str,
        default_container: &str,
    ) -> Self {
        Self {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            replica_specs: replica_specs.to_string(),
            default_container: default_container.to_string(),
        }
    }

    /// The API group: `apiVersion` without its version.
    pub fn group(&self) -> &str {
        group_of(&self.api_version)
    }

    /// Whether an object of `api_version`/`kind` is of this kind. The group
    /// and kind must match; any version of the group is accepted.
    pub fn matches(&self, api_version: &str, kind: &str) -> bool {
        self.kind == kind && self.group() == group_of(api_version)
    }
}

/// The group of an `apiVersion` (`batch/v1` → `batch`, `v1` → ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// The training kinds recognised by default: KubeDL's
/// (`training.kubedl.io/v1alpha1` TFJob, PyTorchJob, XGBoostJob, XDLJob,
/// MarsJob, MPIJob; `inference.kubedl.io/v1alpha1` ElasticBatchJob) and
/// Kubeflow's (`kubeflow.org/v1` TFJob, PyTorchJob, MPIJob, XGBoostJob,
/// PaddleJob). Replica-spec fields and container names are those of the
/// projects' Go API types.
pub fn default_training_kinds() -> Vec<TrainingKind> {
    const KUBEDL: &str = "training.kubedl.io/v1alpha1";
    const KUBEFLOW: &str = "kubeflow.org/v1";
    vec![
        TrainingKind::new(KUBEDL, "TFJob", "tfReplicaSpecs", "tensorflow"),
        TrainingKind::new(KUBEDL, "PyTorchJob", "pytorchReplicaSpecs", "pytorch"),
        TrainingKind::new(KUBEDL, "XGBoostJob", "xgbReplicaSpecs", "xgboostjob"),
        TrainingKind::new(KUBEDL, "XDLJob", "xdlReplicaSpecs", "xdl"),
        TrainingKind::new(KUBEDL, "MarsJob", "marsReplicaSpecs", "mars"),
        TrainingKind::new(KUBEDL, "MPIJob", "mpiReplicaSpecs", "mpi"),
        TrainingKind::new(
            "inference.kubedl.io/v1alpha1",
            "ElasticBatchJob",
            "elasticBatchReplicaSpecs",
            "elasticbatch",
        ),
        TrainingKind::new(KUBEFLOW, "TFJob", "tfReplicaSpecs", "tensorflow"),
        TrainingKind::new(KUBEFLOW, "PyTorchJob", "pytorchReplicaSpecs", "pytorch"),
        TrainingKind::new(KUBEFLOW, "MPIJob", "mpiReplicaSpecs", "mpi"),
        TrainingKind::new(KUBEFLOW, "XGBoostJob", "xgbReplicaSpecs", "xgboost"),
        TrainingKind::new(KUBEFLOW, "PaddleJob", "paddleReplicaSpecs", "paddle"),
    ]
}

/// Settings of normalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The deploy region (`--region`/`REGION`); when set it wins over the
    /// tenancy annotation's.
    pub region: Option<String>,
    /// Training-job kinds to recognise (see [`default_training_kinds`]).
    pub training_kinds: Vec<TrainingKind>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            region: None,
            training_kinds: default_training_kinds(),
        }
    }
}

impl Options {
    /// Default kinds with the given region (`None` or empty: no region).
    #[must_use]
    pub fn with_region(mut self, region: Option<String>) -> Self {
        self.region = region.filter(|r| !r.is_empty());
        self
    }

    /// The training kind of `api_version`/`kind`, if it is one.
    pub fn training_kind(&self, api_version: &str, kind: &str) -> Option<&TrainingKind> {
        self.training_kinds
            .iter()
            .find(|k| k.api_version == api_version && k.kind == kind)
            .or_else(|| {
                self.training_kinds
                    .iter()
                    .find(|k| k.matches(api_version, kind))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_kinds_by_group_and_kind() {
        let o = Options::default();
        let tf = o
            .training_kind("training.kubedl.io/v1alpha1", "TFJob")
            .expect("kubedl tf");
        assert_eq!(tf.default_container, "tensorflow");
        assert_eq!(tf.replica_specs, "tfReplicaSpecs");
        let x = o
            .training_kind("kubeflow.org/v1", "XGBoostJob")
            .expect("kubeflow xgb");
        assert_eq!(x.default_container, "xgboost");
        let x = o
            .training_kind("training.kubedl.io/v1alpha1", "XGBoostJob")
            .expect("kubedl xgb");
        assert_eq!(x.default_container, "xgboostjob");
        // Another version of a known group still matches.
        assert!(o.training_kind("kubeflow.org/v2beta1", "MPIJob").is_some());
        assert!(o.training_kind("batch/v1", "Job").is_none());
        assert!(o.training_kind("example.com/v1", "TFJob").is_none());
    }

    #[test]
    fn group_of_core_is_empty() {
        assert_eq!(group_of("v1"), "");
        assert_eq!(group_of("events.k8s.io/v1"), "events.k8s.io");
    }

    #[test]
    fn empty_region_is_no_region() {
        assert_eq!(
            Options::default().with_region(Some(String::new())).region,
            None
        );
        assert_eq!(
            Options::default()
                .with_region(Some("cn-hz".into()))
                .region
                .as_deref(),
            Some("cn-hz")
        );
    }
}
