use super::*;
use crate::model::{Change, Event, Job, Meta, Record, Timestamp};

/// A scripted database: records what it is asked to run.
#[derive(Debug)]
struct FakeDb {
    dialect: Dialect,
    /// Columns reported for every table (`None`: what the DDL created).
    columns: Option<Vec<&'static str>>,
    unique: bool,
    executed: Vec<Statement<'static>>,
    batches: Vec<Vec<Statement<'static>>>,
    fail_batch: Option<SqlError>,
}

impl FakeDb {
    fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            columns: None,
            unique: true,
            executed: Vec::new(),
            batches: Vec::new(),
            fail_batch: None,
        }
    }
}

/// `st` with its text copied, to keep after the batch it borrowed from.
fn owned(st: Statement<'_>) -> Statement<'static> {
    Statement {
        sql: st.sql,
        params: st
            .params
            .into_iter()
            .map(|v| match v {
                Value::Text(t) => Value::Text(t.into_owned().into()),
                Value::Null => Value::Null,
                Value::Int(i) => Value::Int(i),
                Value::Uint(u) => Value::Uint(u),
                Value::Float(f) => Value::Float(f),
                Value::Bytes(b) => Value::Bytes(b),
                Value::Timestamp(t) => Value::Timestamp(t),
            })
            .collect(),
    }
}

impl Db for FakeDb {
    fn dialect(&self) -> Dialect {
        self.dialect
    }
    fn execute(&mut self, st: Statement<'_>) -> Result<u64, SqlError> {
        self.executed.push(owned(st));
        Ok(0)
    }
    fn query(&mut self, st: Statement<'_>) -> Result<Vec<Vec<Value<'static>>>, SqlError> {
        let table = st.params.first().and_then(Value::as_str).unwrap_or("");
        let kind = match table {
            "replica_info" => Kind::Pod,
            "event_info" => Kind::Event,
            _ => Kind::Job,
        };
        if st.sql.contains("information_schema.columns") || st.sql.contains("pragma_table_xinfo") {
            let t = Table::new(kind, crate::settings::Ident::new(table).expect("ident"));
            let cols: Vec<(&str, i64)> = match &self.columns {
                Some(c) => c.iter().map(|c| (*c, 0)).collect(),
                None => t
                    .columns
                    .iter()
                    .map(|c| (c.name, 0))
                    .chain(t.generated.iter().map(|g| (g.name, 1)))
                    .collect(),
            };
            Ok(cols
                .into_iter()
                .map(|(c, g)| vec![Value::Text(c.to_owned().into()), Value::Int(g)])
                .collect())
        } else if self.unique {
            Ok(vec![vec![Value::Text("uk".into())]])
        } else {
            Ok(vec![])
        }
    }
    fn execute_batch(&mut self, statements: Vec<Statement<'_>>) -> Result<u64, SqlError> {
        if let Some(e) = self.fail_batch.clone() {
            return Err(e);
        }
        let n = statements.len() as u64;
        self.batches
            .push(statements.into_iter().map(owned).collect());
        Ok(n)
    }
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn meta(uid: &str, rv: u64) -> Meta<'static> {
    Meta {
        uid: uid.to_owned().into(),
        name: uid.to_owned().into(),
        namespace: "ns".into(),
        resource_version: rv.to_string().into(),
        resource_version_num: rv,
        labels: vec![],
        created: Timestamp::default(),
    }
}

fn job(uid: &str, rv: u64) -> Entry<'static> {
    Entry {
        change: Change::Applied,
        record: Record::Job(Job {
            meta: meta(uid, rv),
            status: "Running".into(),
            ..Job::default()
        }),
    }
}

fn event<'a>(uid: &str, message: &'a str) -> Entry<'a> {
    Entry {
        change: Change::Applied,
        record: Record::Event(Event {
            meta: meta(uid, 1),
            message: message.into(),
            count: 1,
            ..Event::default()
        }),
    }
}

fn init(dialect: Dialect, settings: &[(&str, &str)]) -> MysqlSink<FakeDb> {
    MysqlSink::init(&kv(settings), |_| Ok(FakeDb::new(dialect))).expect("init")
}

#[test]
fn init_creates_enabled_tables_on_the_named_connection() {
    let mut opened = String::new();
    let sink = MysqlSink::init(&kv(&[("connection", "meta"), ("events", "false")]), |n| {
        opened = n.to_owned();
        Ok(FakeDb::new(Dialect::Mysql))
    })
    .expect("init");
    assert_eq!(opened, "meta");
    let ddl: Vec<&str> = sink.db.executed.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(ddl.len(), 2);
    assert!(ddl[0].starts_with("CREATE TABLE IF NOT EXISTS `job_info`"));
    assert!(ddl[1].starts_with("CREATE TABLE IF NOT EXISTS `replica_info`"));
}

#[test]
fn init_completes_a_kubedl_table() {
    // A table KubeDL created: no version_num, no unique key.
    let mut db = FakeDb::new(Dialect::Mysql);
    db.columns = Some(
        crate::schema::JOB_COLUMNS
            .iter()
            .map(|c| c.name)
            .filter(|c| *c != "version_num" && *c != "gmt_job_running")
            .collect(),
    );
    db.unique = false;
    let settings = Settings::parse(&kv(&[("pods", "false"), ("events", "false")])).expect("ok");
    let sink = MysqlSink::with_db(db, settings).expect("init");
    let sql: Vec<&str> = sink.db.executed.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(sql.len(), 5, "{sql:#?}");
    assert!(sql[1].contains("ADD COLUMN `gmt_job_running` datetime"));
    assert!(sql[2].contains("ADD COLUMN `version_num` bigint(20) unsigned NOT NULL DEFAULT 0"));
    assert_eq!(
        sql[3],
        "ALTER TABLE `job_info` ADD COLUMN `gmt_finished` datetime GENERATED ALWAYS AS (`gmt_job_finished`) VIRTUAL"
    );
    assert_eq!(
        sql[4],
        "CREATE UNIQUE INDEX `uk_job_id` ON `job_info` (`job_id`)"
    );
    // Duplicates are merged in one transaction before the key.
    assert_eq!(sink.db.batches.len(), 1);
    assert!(
        sink.db.batches[0][0]
            .sql
            .starts_with("UPDATE `job_info` SET `version_num` = CAST(`version` AS UNSIGNED)")
    );
    assert!(
        sink.db.batches[0][1]
            .sql
            .starts_with("DELETE FROM `job_info` WHERE `id` IN")
    );
    assert_eq!(sink.migrations().len(), 4, "{:?}", sink.migrations());
    assert!(sink.migrations()[3].contains("added a unique key on `job_id`"));
}

#[test]
fn init_without_create_tables_checks_and_names_what_is_missing() {
    let mut db = FakeDb::new(Dialect::Sqlite);
    db.columns = Some(vec![]);
    let s = Settings::parse(&kv(&[("create_tables", "false")])).expect("ok");
    let err = MysqlSink::with_db(db, s.clone()).unwrap_err();
    assert_eq!(
        err,
        SinkError::Fatal(
            "mysql sink: table `job_info` does not exist and create_tables is false".into()
        )
    );
    let mut db = FakeDb::new(Dialect::Sqlite);
    db.columns = Some(vec!["id", "name", "job_id"]);
    let err = MysqlSink::with_db(db, s.clone()).unwrap_err().to_string();
    assert!(
        err.contains("table `job_info` lacks column(s) namespace, version"),
        "{err}"
    );
    let mut db = FakeDb::new(Dialect::Sqlite);
    db.unique = false;
    let err = MysqlSink::with_db(db, s).unwrap_err().to_string();
    assert!(err.contains("no unique key on `job_id`"), "{err}");
}

#[test]
fn init_errors_are_fatal_or_retryable_by_cause() {
    let err = MysqlSink::<FakeDb>::init(&kv(&[("colour", "x")]), |_| {
        panic!("must not open before settings are valid")
    })
    .unwrap_err();
    assert!(
        matches!(&err, SinkError::Fatal(m) if m.contains("`colour`")),
        "{err}"
    );
    let err = MysqlSink::<FakeDb>::init(&[], |_| Err(SqlError::Denied("not granted".into())))
        .unwrap_err();
    assert!(
        matches!(&err, SinkError::Fatal(m) if m.contains("`default`")),
        "{err}"
    );
    let err =
        MysqlSink::<FakeDb>::init(&[], |_| Err(SqlError::Unavailable("down".into()))).unwrap_err();
    assert!(matches!(err, SinkError::Retryable(_)));
}

#[test]
fn held_pages_by_uid_with_the_last_uid_as_cursor() {
    let (sql, params) = held_query(Dialect::Mysql, "replica_info", "pod_id", None, 100);
    assert_eq!(
        sql,
        "SELECT `pod_id` FROM `replica_info` WHERE is_in_etcd = 1 ORDER BY `pod_id` LIMIT 100"
    );
    assert!(params.is_empty());
    let (sql, params) = held_query(Dialect::Sqlite, "job_info", "job_id", Some("u7"), 5);
    assert_eq!(
        sql,
        "SELECT \"job_id\" FROM \"job_info\" WHERE is_in_etcd = 1 AND \"job_id\" > ? ORDER BY \"job_id\" LIMIT 5"
    );
    assert_eq!(params, vec![Value::Text("u7".into())]);
    // The fake answers every other query with one row, "uk": a full
    // page has a next cursor (its last uid), a short one has none.
    let mut sink = init(Dialect::Mysql, &[]);
    assert_eq!(
        sink.held(HeldKind::Pod, None, 1).expect("held"),
        (vec!["uk".to_owned()], Some("uk".to_owned()))
    );
    assert_eq!(
        sink.held(HeldKind::Pod, Some("a"), 2).expect("held"),
        (vec!["uk".to_owned()], None)
    );
    let mut sink = init(Dialect::Mysql, &[("events", "false")]);
    assert_eq!(
        sink.held(HeldKind::Event, None, 10).expect("held"),
        (vec![], None),
        "a kind the sink does not write: one empty page"
    );
}

#[test]
fn write_packs_rows_into_bounded_statements_in_one_batch() {
    let mut sink = init(Dialect::Mysql, &[("max_rows_per_statement", "500")]);
    let mut batch: Vec<Entry> = (0..1201).map(|i| job(&format!("j{i}"), 1)).collect();
    batch.push(event("e1", "hello"));
    // A duplicate uid collapses into one row.
    batch.push(job("j0", 2));
    sink.write(&batch).expect("write");
    assert_eq!(sink.db.batches.len(), 1, "one transaction");
    let statements = &sink.db.batches[0];
    let cols = crate::schema::JOB_COLUMNS.len();
    let rows: Vec<usize> = statements.iter().map(|s| s.params.len()).collect();
    // Full statements of 500 rows; the 201 left in power-of-two sizes.
    assert_eq!(
        rows,
        [
            500 * cols,
            500 * cols,
            128 * cols,
            64 * cols,
            8 * cols,
            cols,
            crate::schema::EVENT_COLUMNS.len()
        ]
    );
    for st in statements {
        assert_eq!(st.sql.matches('?').count(), st.params.len());
    }
    assert!(statements[6].sql.starts_with("INSERT INTO `event_info`"));
    // j0 carries version 2, the later entry.
    assert!(statements[0].params.contains(&Value::Text("2".into())));
}

#[test]
fn statement_sizes_are_the_cap_or_powers_of_two() {
    assert_eq!(statement_sizes(0, 500), Vec::<usize>::new());
    assert_eq!(statement_sizes(500, 500), [500]);
    assert_eq!(statement_sizes(201, 500), [128, 64, 8, 1]);
    assert_eq!(statement_sizes(1, 500), [1]);
    assert_eq!(statement_sizes(499, 500), [256, 128, 64, 32, 16, 2, 1]);
    // Every count up to the cap is covered exactly, from a small set of sizes.
    let mut shapes = std::collections::BTreeSet::new();
    for n in 1..=500 {
        let sizes = statement_sizes(n, 500);
        assert_eq!(sizes.iter().sum::<usize>(), n);
        shapes.extend(sizes);
    }
    assert_eq!(shapes.len(), 10, "{shapes:?}");
}

#[test]
fn write_bounds_statement_bytes() {
    let mut sink = init(
        Dialect::Sqlite,
        &[
            ("jobs", "false"),
            ("pods", "false"),
            ("max_statement_bytes", "4096"),
        ],
    );
    let big = "x".repeat(1500);
    let batch: Vec<Entry> = (0..10).map(|i| event(&format!("e{i}"), &big)).collect();
    sink.write(&batch).expect("write");
    let statements = &sink.db.batches[0];
    let per = crate::schema::EVENT_COLUMNS.len();
    assert!(statements.len() >= 4, "{} statements", statements.len());
    assert_eq!(
        statements.iter().map(|s| s.params.len()).sum::<usize>(),
        10 * per
    );
    for st in statements {
        let bytes = st.sql.len() + st.params.iter().map(Value::wire_size).sum::<usize>();
        assert!(bytes <= 4096 || st.params.len() == per, "{bytes} bytes");
    }
}

#[test]
fn write_skips_disabled_kinds_and_empty_batches() {
    let mut sink = init(Dialect::Mysql, &[("events", "false")]);
    assert_eq!(sink.write(&[event("e", "m")]).expect("write"), 0);
    assert_eq!(sink.write(&[]).expect("write"), 0);
    assert!(sink.db.batches.is_empty());
}

#[test]
fn write_errors_name_the_tables() {
    let mut sink = init(Dialect::Mysql, &[]);
    sink.db.fail_batch = Some(SqlError::Unavailable("connection refused".into()));
    let err = sink.write(&[job("a", 1)]).unwrap_err();
    assert!(
        matches!(&err, SinkError::Retryable(m) if m.contains("table `job_info`") && m.contains("connection refused")),
        "{err}"
    );
    for e in [
        SqlError::Rejected("syntax".into()),
        SqlError::Denied("no".into()),
        SqlError::TooLarge("4 MiB".into()),
    ] {
        sink.db.fail_batch = Some(e);
        let err = sink.write(&[job("a", 1), event("e", "m")]).unwrap_err();
        assert!(
            matches!(&err, SinkError::Fatal(m) if m.contains("tables `job_info`, `event_info`")),
            "{err}"
        );
    }
}

/// A packed batch (what `write-packed` decodes) plans the same statements
/// as the model built directly, tombstones included.
#[test]
fn a_packed_batch_plans_as_the_model_does() {
    use kubesink_packed as p;
    let packed = [
        p::Change::Applied(p::Record::Event(p::Event {
            meta: p::Meta {
                uid: "e1",
                name: "e1",
                namespace: "ns",
                resource_version: "1",
                resource_version_num: 1,
                labels: vec![("app", "x")],
                created: p::Timestamp::default(),
            },
            message: "m",
            count: 1,
            ..p::Event::default()
        })),
        p::Change::Tombstone(p::Tombstone {
            kind: p::RecordKind::Job,
            uid: "j9",
            at: p::Timestamp {
                seconds: 5,
                nanos: 0,
            },
        }),
    ];
    let bytes = p::encode(&packed);
    let decoded = p::decode(&bytes).unwrap();
    let from_packed: Vec<Entry> = decoded.iter().map(Entry::from_packed).collect();
    let direct = vec![
        event("e1", "m"),
        Entry::tombstone(
            crate::HeldKind::Job,
            "j9",
            Timestamp {
                seconds: 5,
                nanos: 0,
            },
        ),
    ];
    assert_eq!(from_packed, direct);
    let sink = init(Dialect::Mysql, &[]);
    assert_eq!(
        format!("{:?}", sink.planner().plan(&from_packed)),
        format!("{:?}", sink.planner().plan(&direct))
    );
}
