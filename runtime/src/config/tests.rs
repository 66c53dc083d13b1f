//! Tests of parsing and checking ([`Config::parse`], [`Config::check`]).

use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "f.yaml")
}

/// The field an error names, and the whole message.
fn refused(text: &str) -> (String, String) {
    let err = parse(text).expect_err(text);
    let field = err.field().unwrap_or_default().to_owned();
    (field, err.to_string())
}

#[test]
fn parses_the_documented_example() {
    let text = r#"
region: cn-hangzhou
connections:
  kubedl:
    driver: mysql
    host: ${MYSQL_HOST}
    port: 3306
    database: kubedl
    user: u
    password: p
  local:
    driver: sqlite
    path: ./kubesink.db
sinks:
  - name: kubedl-mysql
    module: builtin:mysql
    records: [jobs, pods]
    connections: [kubedl]
    settings: { connection: kubedl }
    limits: { memory: 64Mi, call_timeout: 30s, host_memory: 64Mi, cpu: 500m, http_max_in_flight: 16 }
    batch: { max_records: 100, max_delay: 50ms }
"#;
    let c = parse(text).unwrap();
    assert_eq!(c.region.as_deref(), Some("cn-hangzhou"));
    let s = &c.sinks[0];
    assert_eq!(s.module, ModuleRef::Builtin(Builtin::Mysql));
    assert_eq!(s.records, vec![RecordKind::Jobs, RecordKind::Pods]);
    assert_eq!(s.batch.max_delay, Duration::from_millis(50));
    assert_eq!(s.limits.call_timeout, Some(Duration::from_secs(30)));
    assert_eq!(s.limits.memory, Some(ByteSize::new(64 << 20)));
    assert_eq!(s.limits.cpu.map(Cores::get), Some(0.5));
    assert_eq!(s.limits.http_max_in_flight, Some(16));
    assert_eq!(s.queue.capacity, 10_000);
    assert_eq!(c.connections["kubedl"].port, Some(StringOrInt::Int(3306)));
}

#[test]
fn unknown_field_is_named_with_its_path_and_the_origin() {
    let text = "sinks:\n  - name: a\n    module: x.wasm\n    limits: { memroy: 1Mi }\n";
    let (field, message) = refused(text);
    assert_eq!(field, "sinks[0].limits.memroy");
    assert!(
        message.contains("memroy") && message.contains("config f.yaml"),
        "{message}"
    );
    let (field, _) = refused("sinkz: []\n");
    assert_eq!(field, "sinkz");
}

#[test]
fn a_file_is_named_in_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.yaml");
    std::fs::write(&path, "sinks:\n  - {name: a, module: x.wasm, workers: 0}\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(
        err.contains(&format!("config file {}", path.display()))
            && err.contains("sinks[0].workers"),
        "{err}"
    );
    let err = Config::load(&dir.path().join("none.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("none.yaml"), "{err}");
}

#[test]
fn check_rejects_ungranted_connection_and_duplicate_names() {
    let (field, message) =
        refused("sinks:\n  - name: a\n    module: x.wasm\n    connections: [nope]\n");
    assert_eq!(field, "sinks[0].connections[0]");
    assert!(message.contains("nope"), "{message}");
    let (field, _) =
        refused("sinks:\n  - {name: a, module: x.wasm}\n  - {name: a, module: y.wasm}\n");
    assert_eq!(field, "sinks[1].name");
}

#[test]
fn a_configuration_built_in_code_is_checked_by_resolve() {
    let mut c = parse("sinks:\n  - {name: a, module: x.wasm}\n").unwrap();
    c.sinks[0].queue.capacity = 0;
    let err = c.resolve("flags").unwrap_err();
    assert_eq!(err.field(), Some("sinks[0].queue.capacity"));
}

#[test]
fn workers_and_http_in_flight_are_within_their_ranges() {
    for (key, max) in [
        ("workers", MAX_WORKERS),
        ("limits.http_max_in_flight", MAX_HTTP_IN_FLIGHT),
    ] {
        for (n, ok) in [(0, false), (1, true), (max, true), (max + 1, false)] {
            let value = match key {
                "workers" => format!("workers: {n}"),
                _ => format!("limits: {{http_max_in_flight: {n}}}"),
            };
            let text = format!("sinks:\n  - {{name: a, module: x.wasm, {value}}}\n");
            match parse(&text) {
                Ok(_) => assert!(ok, "{key} {n} accepted"),
                Err(e) => {
                    assert!(!ok, "{key} {n} refused: {e}");
                    assert_eq!(e.field(), Some(format!("sinks[0].{key}").as_str()), "{e}");
                    assert!(
                        e.to_string().contains(&format!("between 1 and {max}")),
                        "{e}"
                    );
                }
            }
        }
    }
    let (field, _) =
        refused("sinks:\n  - {name: a, module: x.wasm, limits: {http_max_in_flight: many}}\n");
    assert_eq!(field, "sinks[0].limits.http_max_in_flight");
}

#[test]
fn modules_and_pins_are_typed_when_parsed() {
    let pin = "AB".repeat(32);
    let text = format!(
        "sinks:\n  - {{name: a, module: 'configmap:sinks/mysql.wasm.gz', sha256: '{pin}', limits: {{max_module: 2Mi}}}}\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.sinks[0].module,
        ModuleRef::ConfigMap(ConfigMapRef::parse("sinks/mysql.wasm.gz").unwrap())
    );
    assert_eq!(
        c.sinks[0].sha256.as_ref().map(Sha256::as_str),
        Some("ab".repeat(32).as_str())
    );
    for (text, field, says) in [
        (
            "sinks:\n  - {name: a, module: 'configmap:sinks'}\n",
            "sinks[0].module",
            "configmap:NAME/KEY",
        ),
        (
            "sinks:\n  - {name: a, module: 'configmap:/k'}\n",
            "sinks[0].module",
            "not a ConfigMap name",
        ),
        (
            "sinks:\n  - {name: a, module: 'builtin:nope'}\n",
            "sinks[0].module",
            "no bundled sink named `nope`",
        ),
        (
            "sinks:\n  - {name: a, module: x.wasm, sha256: abc}\n",
            "sinks[0].sha256",
            "`abc` is not a SHA-256 digest",
        ),
        (
            "sinks:\n  - {name: a, module: x.wasm, limits: {max_module: big}}\n",
            "sinks[0].limits.max_module",
            "`big` is not a size",
        ),
    ] {
        let (f, message) = refused(text);
        assert_eq!(f, field, "{text}: {message}");
        assert!(message.contains(says), "{text}: {message}");
    }
}

#[test]
fn bad_sizes_cpu_and_counts_name_their_field() {
    for (limits, field) in [
        ("{ memory: lots }", "sinks[0].limits.memory"),
        ("{ log_rate: 1Xi }", "sinks[0].limits.log_rate"),
        ("{ host_memory: lots }", "sinks[0].limits.host_memory"),
        ("{ cpu: 2cores }", "sinks[0].limits.cpu"),
        ("{ cpu: 0 }", "sinks[0].limits.cpu"),
        ("{ cpu: -1 }", "sinks[0].limits.cpu"),
        ("{ max_resources: 0 }", "sinks[0].limits.max_resources"),
        ("{ call_timeout: soon }", "sinks[0].limits.call_timeout"),
    ] {
        let text = format!("sinks:\n  - name: a\n    module: x.wasm\n    limits: {limits}\n");
        let (f, message) = refused(&text);
        assert_eq!(f, field, "{limits}: {message}");
        assert!(message.contains("f.yaml"), "{limits}: {message}");
    }
}

#[test]
fn settings_do_not_print_their_secrets_through_debug() {
    let text = "sinks:\n  - name: a\n    module: x.wasm\n    settings:\n      endpoint: http://127.0.0.1:9000\n      access_key_secret: kubesink-test-secret\n      header.Authorization: Bearer abc\n      password: hunter2\n";
    let c = parse(text).unwrap();
    assert_eq!(
        c.sinks[0].settings["password"], "hunter2",
        "the value is kept"
    );
    let shown = format!("{c:?} {c:#?} {:?}", c.sinks[0]);
    for secret in ["kubesink-test-secret", "Bearer abc", "hunter2"] {
        assert!(!shown.contains(secret), "{secret} printed: {shown}");
    }
    assert!(
        shown.contains("127.0.0.1:9000") && shown.contains("[REDACTED]"),
        "{shown}"
    );
}

#[test]
fn held_bounds_are_read_and_checked() {
    let plan = parse("held: { deadline: 5s, max_uids: 10, max_bytes: 1Mi }\n")
        .unwrap()
        .resolve("f.yaml")
        .unwrap();
    let limits = crate::pipeline::HeldLimits::of(&plan.held);
    assert_eq!(limits.deadline, Duration::from_secs(5));
    assert_eq!((limits.max_uids, limits.max_bytes), (10, 1 << 20));
    let defaults = parse("sinks: []\n").unwrap().resolve("f.yaml").unwrap();
    assert_eq!(
        crate::pipeline::HeldLimits::of(&defaults.held),
        crate::pipeline::HeldLimits::default()
    );
    for (held, field) in [
        ("{ max_uids: 0 }", "held.max_uids"),
        ("{ deadline: 0s }", "held.deadline"),
        ("{ max_bytes: 0 }", "held.max_bytes"),
    ] {
        let (f, message) = refused(&format!("held: {held}\n"));
        assert_eq!(f, field, "{held}: {message}");
    }
    assert!(parse("held: { deadlines: 5s }\n").is_err(), "unknown key");
}

#[test]
fn workers_default_to_one_per_core_on_a_network_database_and_one_elsewhere() {
    let text = "connections:\n  m: { driver: mysql, host: db }\n  s: { driver: sqlite, path: ./x.db }\n\
                sinks:\n  - {name: net, module: x.wasm, connections: [s, m]}\n  - {name: file, module: x.wasm, connections: [s]}\n  - {name: http, module: x.wasm}\n  - {name: set, module: x.wasm, connections: [m], workers: 2}\n";
    let plan = parse(text).unwrap().resolve("test").unwrap();
    let workers: Vec<(&str, usize)> = plan
        .sinks
        .iter()
        .map(|s| (s.spec.name.as_str(), s.workers))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        workers,
        [("net", cores.min(4)), ("file", 1), ("http", 1), ("set", 2)],
        "the rule, and a set value wins"
    );
}

#[test]
fn kafka_producers_resolve_with_expanded_credentials_and_sinks_get_their_grants() {
    // Unset: its default is taken.
    let var = "KUBESINK_TEST_KAFKA_CONFIG_PASSWORD";
    let text = format!(
        "kafka:\n  bus:\n    brokers: ['k-0:9092', ' k-1:9093 ']\n    sasl: {{ mechanism: PLAIN, username: kube, password: '${{{var}:-s3cret-kafka}}' }}\n    compression: snappy\n    message_max_bytes: 2Mi\n    linger: 1ms\n    delivery_timeout: 10s\nsinks:\n  - name: k\n    module: builtin:kafka\n    kafka: {{ bus: [t.events, t.jobs] }}\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.sinks[0].module, ModuleRef::Builtin(Builtin::Kafka));
    let shown = format!("{c:?}");
    assert!(!shown.contains("s3cret-kafka"), "{shown}");
    // `builtin:kafka` is looked for on disk by resolve; take a path instead.
    let mut c = c;
    c.sinks[0].module = ModuleRef::Path("k.wasm".into());
    let plan = c.resolve("f.yaml").unwrap();
    let p = &plan.host.kafka[0];
    assert_eq!(p.name, "bus");
    assert_eq!(
        p.brokers,
        vec!["k-0:9092".to_owned(), "k-1:9093".to_owned()]
    );
    let sasl = p.sasl.as_ref().unwrap();
    assert_eq!(
        (sasl.username.as_str(), sasl.password.expose()),
        ("kube", "s3cret-kafka")
    );
    assert_eq!(p.compression, kubesink_host::kafka::Compression::Snappy);
    assert_eq!(p.message_max_bytes, 2 << 20);
    assert_eq!(p.linger, Duration::from_millis(1));
    assert_eq!(p.delivery_timeout, Duration::from_secs(10));
    assert!(!format!("{plan:?}").contains("s3cret-kafka"));
    assert_eq!(
        plan.sinks[0].spec.limits.kafka,
        vec![kubesink_host::kafka::KafkaGrant {
            producer: "bus".into(),
            topics: vec!["t.events".into(), "t.jobs".into()],
        }]
    );
    let (field, message) =
        refused("sinks:\n  - { name: a, module: x.wasm, kafka: { bus: [t] } }\n");
    assert_eq!(field, "sinks[0].kafka.bus");
    assert!(message.contains("no producer named `bus`"), "{message}");
    let (field, _) = refused("kafka:\n  bus: { brokers: [] }\n");
    assert_eq!(field, "kafka.bus.brokers");
}
