//! Host→guest call cost (criterion): `SinkInstance::write` on the mysql
//! component with `pods` and `events` switched off (it refuses to have
//! every kind off) and batches of events only, so the guest lifts the batch
//! and moves it into its model but sends no SQL. `empty_batch` is the fixed cost of one call (epoch
//! deadline, store bookkeeping, the canonical ABI call); `events_N` adds N
//! realistic events, so `(events_N - empty_batch) / N` is the per-record
//! cost of crossing into the sandbox. The mysql component exports
//! `write-packed` (WIT `kubesink:sink/packed`), so that is: the host packs
//! the batch, wasmtime copies the buffer in, the guest decodes it and
//! borrows it into its model. `native_pack_1000` and `native_unpack_1000`
//! time the two ends natively, to split that figure.
//!
//! `cargo bench -p kubesink-bench --bench host_call`; results in
//! `target/criterion/host_call/`, read by `kubesink-bench` for the report.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kubesink_host::sql::ConnectionConfig;
use kubesink_host::{
    Host, HostOptions, Limits, ModuleSource, PackedLayout, SinkInstance, SinkSpec,
};
use kubesink_normalize::record::{Change, Entry, Event, Meta, ObjectRef, Record, Timestamp};

fn event(i: usize) -> Entry {
    let ts = |s: i64| Timestamp {
        seconds: 1_772_409_600 + s,
        nanos: 0,
    };
    Change::Applied(Record::Event(Event {
        meta: Meta {
            uid: format!("3f1c2a9e-0000-4000-a000-{i:012x}"),
            name: format!("mnist-{i}-worker-0.17f2a9c3b4d5e6f7"),
            namespace: "team-a".into(),
            resource_version: (1000 + i).to_string(),
            resource_version_num: 1000 + i as u64,
            labels: Vec::new(),
            created: ts(i as i64),
        },
        involved: ObjectRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: "team-a".into(),
            name: format!("mnist-{i}-worker-0"),
            uid: format!("7d3e1b2c-0000-4000-a000-{i:012x}"),
        },
        event_type: "Normal".into(),
        reason: "Pulled".into(),
        message: format!(
            "Successfully pulled image \"registry.example.com/train/tfjob:v{}\" in 1.2s",
            i % 5
        ),
        source: "kubelet/node-17".into(),
        count: 1,
        first_seen: ts(i as i64),
        last_seen: ts(i as i64),
        region: "cn-hangzhou".into(),
    }))
}

fn load(rt: &tokio::runtime::Runtime) -> (Host, SinkInstance, tempfile::TempDir) {
    let wasm = kubesink_tests::guests::guest_wasm("kubesink-sink-mysql").expect("mysql component");
    let cache = tempfile::tempdir().expect("tempdir");
    let host = Host::new(HostOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        sql: vec![ConnectionConfig::new("bench", "sqlite::memory:")],
        kafka: Vec::new(),
    })
    .expect("host");
    let off = |k: &str| (k.to_owned(), "false".to_owned());
    let sink = rt
        .block_on(host.load(SinkSpec {
            name: "call-cost".into(),
            module: ModuleSource::Path(wasm),
            settings: vec![
                ("connection".into(), "bench".into()),
                off("pods"),
                off("events"),
            ],
            sql_grants: vec!["bench".into()],
            limits: Limits::default(),
        }))
        .expect("load the mysql component");
    (host, sink, cache)
}

fn host_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_host, mut sink, _cache) = load(&rt);
    let mut group = c.benchmark_group("host_call");
    group.bench_function("empty_batch", |b| {
        b.iter(|| rt.block_on(sink.write(black_box(&[]))).expect("write"));
    });
    for n in [100usize, 1000] {
        let batch: Vec<Entry> = (0..n).map(event).collect();
        group.throughput(criterion::Throughput::Elements(n as u64));
        group.bench_function(format!("events_{n}"), |b| {
            b.iter(|| rt.block_on(sink.write(black_box(&batch))).expect("write"));
        });
    }
    // The same batches, natively: the host's packing alone, and the
    // sink's side (decoding the buffer, borrowing it into the mysql sink's
    // model) alone, to split the wasm figure above. Unsuffixed: layout 2,
    // which the mysql component takes; `_v1`: layout 1, for comparison.
    {
        let n = 1000usize;
        let batch: Vec<Entry> = (0..n).map(event).collect();
        group.throughput(criterion::Throughput::Elements(n as u64));
        type Decode =
            for<'a> fn(
                &'a [u8],
            )
                -> Result<kubesink_packed::Changes<'a>, kubesink_packed::DecodeError>;
        let layouts: [(PackedLayout, &str, Decode); 2] = [
            (PackedLayout::V2, "", kubesink_packed::changes_v2),
            (PackedLayout::V1, "_v1", kubesink_packed::changes),
        ];
        for (layout, suffix, decode) in layouts {
            let mut packer = kubesink_host::Packer::default();
            group.bench_function(format!("native_pack{suffix}_{n}"), |b| {
                // As `SinkInstance::write` packs, into a buffer it reuses.
                b.iter(|| {
                    let buf = packer.pack_in(layout, black_box(&batch)).expect("pack");
                    packer.recycle(buf);
                });
            });
            let bytes = packer.pack_in(layout, &batch).expect("pack");
            group.bench_function(format!("native_unpack{suffix}_{n}"), |b| {
                b.iter(|| {
                    // As the mysql component's `write-packed-v2` does.
                    let changes = decode(black_box(&bytes)).expect("decode");
                    let mut model = Vec::with_capacity(changes.capacity_hint());
                    for change in changes {
                        model.push(kubesink_sink_mysql::Entry::from_packed(
                            &change.expect("decode"),
                        ));
                    }
                    black_box(model.len())
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, host_call);
criterion_main!(benches);
