//! Unit tests of [`super`]: loading, sharing and refusals.

use super::*;
use crate::{CompileError, DEFAULT_HOST_MEMORY_BYTES};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn host_is_send_sync_and_instances_are_send() {
    assert_send_sync::<Host>();
    fn assert_send<T: Send>() {}
    assert_send::<SinkInstance>();
}

#[tokio::test]
async fn dropping_the_host_stops_the_ticker() {
    let host = Host::new(HostOptions::default()).expect("host");
    let stopped = host.epoch().stopped_probe();
    assert!(!stopped());
    let weak = Arc::downgrade(&host.inner);
    drop(host);
    assert!(
        weak.upgrade().is_none(),
        "no reference cycle keeps the host alive"
    );
    assert!(stopped(), "ticker told to stop (and joined)");
}

#[tokio::test]
async fn a_sinks_instances_share_one_budget_and_one_cpu_meter() {
    let host = Host::new(HostOptions::default()).expect("host");
    let spec = |name: &str, limits: Limits| SinkSpec {
        name: name.into(),
        module: ModuleSource::Path("unused.wasm".into()),
        settings: vec![],
        sql_grants: vec![],
        limits,
    };
    let quota = Limits {
        cpu: Some(0.5),
        host_memory_bytes: 1 << 20,
        ..Limits::default()
    };
    let a = spec("a", quota.clone());
    assert!(host.sink_budget(&a).same(&host.sink_budget(&a)));
    assert!(host.sink_cpu(&a).same(&host.sink_cpu(&a)));
    assert_eq!(host.sink_budget(&a).limit(), 1 << 20);
    assert_eq!(host.sink_cpu(&a).cores(), Some(0.5));
    let b = spec("b", quota.clone());
    assert!(!host.sink_budget(&a).same(&host.sink_budget(&b)));
    assert!(!host.sink_cpu(&a).same(&host.sink_cpu(&b)));
    // New limits for the same name: a new budget and meter from then on.
    let a2 = spec("a", Limits::default());
    let old = host.sink_budget(&a);
    let new = host.sink_budget(&a2);
    assert!(!old.same(&new));
    assert_eq!(new.limit(), DEFAULT_HOST_MEMORY_BYTES);
    assert_eq!(host.sink_cpu(&a2).cores(), None);
}

#[tokio::test]
async fn missing_file_names_sink_and_path() {
    let host = Host::new(HostOptions::default()).expect("host");
    let err = host
        .load(SinkSpec {
            name: "s1".into(),
            module: ModuleSource::Path("does/not/exist.wasm".into()),
            settings: vec![],
            sql_grants: vec![],
            limits: Limits::default(),
        })
        .await
        .expect_err("missing");
    let msg = err.to_string();
    assert!(
        msg.contains("s1") && msg.contains("does/not/exist.wasm"),
        "{msg}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn module_over_the_size_limit_is_refused_before_compiling() {
    let host = Host::new(HostOptions::default()).expect("host");
    let err = host
        .load(SinkSpec {
            name: "big".into(),
            module: ModuleSource::Bytes {
                origin: "configmap ns/cm key big.wasm".into(),
                bytes: Arc::new(vec![0; 2048]),
            },
            settings: vec![],
            sql_grants: vec![],
            limits: Limits {
                max_module_bytes: 1024,
                ..Limits::default()
            },
        })
        .await
        .expect_err("too large");
    assert!(
        matches!(
            err,
            HostError::TooLarge {
                size: 2048,
                limit: 1024,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("big") && msg.contains("configmap ns/cm key big.wasm"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_component_without_the_sink_export_is_the_wrong_world() {
    let host = Host::new(HostOptions::default()).expect("host");
    let err = host
        .load(SinkSpec {
            name: "empty".into(),
            module: ModuleSource::Bytes {
                origin: "configmap ns/cm key empty.wasm".into(),
                // The smallest valid component: a header, nothing else.
                bytes: Arc::new(b"\0asm\x0d\0\x01\0".to_vec()),
            },
            settings: vec![],
            sql_grants: vec![],
            limits: Limits::default(),
        })
        .await
        .expect_err("no sink export");
    assert!(matches!(err, HostError::World { .. }), "{err:?}");
    assert!(
        err.to_string().contains("kubesink:sink/sink-world"),
        "{err}"
    );
}

#[tokio::test]
async fn core_module_bytes_are_refused_with_origin() {
    let host = Host::new(HostOptions::default()).expect("host");
    let err = host
        .load(SinkSpec {
            name: "s2".into(),
            module: ModuleSource::Bytes {
                origin: "configmap ns/cm key x.wasm".into(),
                bytes: Arc::new(b"\0asm\x01\0\0\0".to_vec()),
            },
            settings: vec![],
            sql_grants: vec![],
            limits: Limits::default(),
        })
        .await
        .expect_err("core module");
    let msg = err.to_string();
    assert!(matches!(
        err,
        HostError::Compile {
            source: CompileError::CoreModule,
            ..
        }
    ));
    assert!(
        msg.contains("s2") && msg.contains("configmap ns/cm key x.wasm"),
        "{msg}"
    );
}
