//! What a worker needs of a sink instance, as a trait: implemented by
//! [`kubesink_host::SinkInstance`] (a wasmtime store running the sink's
//! component), and by in-process fakes in the pipeline's unit tests, so that
//! retries, bisection and shutdown are tested without WebAssembly.

use std::future::Future;

use kubesink_host::{CallError, SinkInstance};
use kubesink_normalize::record::{Entry, RecordKind};

/// One instance of a sink, owned by one worker.
pub trait Instance: Send + 'static {
    /// Where its module came from (a file path, a ConfigMap key), for logs.
    fn origin(&self) -> &str;

    /// Delivers one batch. After a fault the instance has discarded its
    /// state; the next call starts from a fresh one.
    fn write(&mut self, batch: &[Entry]) -> impl Future<Output = Result<(), CallError>> + Send;

    /// The uids of `kind` the sink holds as still in the cluster.
    fn held(
        &mut self,
        kind: RecordKind,
    ) -> impl Future<Output = Result<Vec<String>, CallError>> + Send;

    /// Discards the instance's state: the next call runs in a fresh one
    /// (after a fatal error or a fault).
    fn invalidate(&mut self);
}

impl Instance for SinkInstance {
    fn origin(&self) -> &str {
        SinkInstance::origin(self)
    }

    fn write(&mut self, batch: &[Entry]) -> impl Future<Output = Result<(), CallError>> + Send {
        SinkInstance::write(self, batch)
    }

    fn held(
        &mut self,
        kind: RecordKind,
    ) -> impl Future<Output = Result<Vec<String>, CallError>> + Send {
        SinkInstance::held(self, kind)
    }

    fn invalidate(&mut self) {
        SinkInstance::invalidate(self);
    }
}
