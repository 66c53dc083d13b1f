use super::*;

fn event<'a>(uid: &'a str, message: &'a str) -> Event<'a> {
    Event {
        meta: Meta {
            uid,
            name: "pod-a.17f",
            namespace: "team-a",
            resource_version: "1042",
            resource_version_num: 1042,
            labels: vec![("app", "mnist"), ("tier", "")],
            created: Timestamp {
                seconds: -3,
                nanos: 999_999_999,
            },
        },
        involved: ObjectRef {
            api_version: "v1",
            kind: "Pod",
            namespace: "team-a",
            name: "pod-a",
            uid: "",
        },
        event_type: "Warning",
        reason: "BackOff",
        message,
        source: "kubelet/node-1",
        count: 300,
        first_seen: Timestamp::default(),
        last_seen: Timestamp {
            seconds: 1_772_409_600,
            nanos: 0,
        },
        region: "",
    }
}

/// The layout `wit/README.md` documents, byte by byte: a list is a varint
/// count, a variant its case index, a string a varint length and UTF-8,
/// `s64` zigzag, `u32` LEB128.
#[test]
fn a_tombstone_is_laid_out_as_documented() {
    let batch = [Change::Tombstone(Tombstone {
        kind: RecordKind::Pod,
        uid: "u1",
        at: Timestamp {
            seconds: -2,
            nanos: 300,
        },
    })];
    let bytes = encode(&batch);
    assert_eq!(
        bytes,
        [
            1, // one change
            2, // case `tombstone`
            1, // kind `pod`
            2, b'u', b'1', // uid
            3,    // seconds -2, zigzag
            0xac, 0x02, // nanos 300
        ]
    );
    assert_eq!(decode(&bytes).unwrap(), batch);
}

#[test]
fn every_case_round_trips_and_strings_are_borrowed_from_the_buffer() {
    let job = Job {
        meta: Meta {
            uid: "j1",
            ..Meta::default()
        },
        api_version: "training.kubedl.io/v1alpha1",
        kind: "TFJob",
        status: "Running",
        resources: "{}",
        tenant: "t",
        owner: "o",
        region: "cn",
        modified: Timestamp::default(),
        running_at: Some(Timestamp {
            seconds: 9,
            nanos: 1,
        }),
        finished_at: None,
        remark: "",
    };
    let pod = Pod {
        meta: Meta {
            uid: "p1",
            ..Meta::default()
        },
        job_uid: "j1",
        replica_type: "Worker",
        finished_at: Some(Timestamp::default()),
        remark: "Reason: OOMKilled\nExitCode: 137\nMessage: ünïcode",
        ..Pod::default()
    };
    let batch = vec![
        Change::Applied(Record::Job(job)),
        Change::Removed(Removal {
            at: Timestamp {
                seconds: 1,
                nanos: 2,
            },
            record: Record::Pod(pod),
        }),
        Change::Applied(Record::Event(event("e1", "Back-off restarting"))),
        Change::Tombstone(Tombstone {
            kind: RecordKind::Event,
            uid: "e0",
            at: Timestamp::default(),
        }),
    ];
    let bytes = encode(&batch);
    let decoded = decode(&bytes).unwrap();
    assert_eq!(decoded, batch);
    let Change::Applied(Record::Event(e)) = &decoded[2] else {
        panic!("{decoded:?}");
    };
    let range = bytes.as_ptr_range();
    assert!(
        range.contains(&e.message.as_ptr()),
        "borrowed from the buffer"
    );
    assert_eq!(e.meta.labels, [("app", "mnist"), ("tier", "")]);
}

#[test]
fn a_malformed_buffer_is_an_error_not_a_panic() {
    let bytes = encode(&[Change::Applied(Record::Event(event("e1", "m")))]);
    // Cut short at every length.
    for end in 0..bytes.len() {
        let err = decode(&bytes[..end]).expect_err("cut short");
        assert!(err.to_string().starts_with("not a packed batch: "), "{err}");
    }
    // Bytes after the list.
    let mut longer = bytes.clone();
    longer.push(0);
    let err = decode(&longer).expect_err("trailing byte");
    assert!(err.to_string().contains("1 bytes left"), "{err}");
    // A case index past the variant's cases.
    let mut bad = bytes.clone();
    bad[1] = 7;
    assert!(decode(&bad).is_err());
    // Invalid UTF-8 in a string: `e1` is at offset 4 (count, case, case, len).
    let mut bad = bytes.clone();
    assert_eq!(&bad[4..6], b"e1");
    bad[4] = 0xff;
    assert!(decode(&bad).is_err());
    // A count far past the buffer.
    assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
}

#[test]
fn an_empty_batch_is_one_byte() {
    assert_eq!(encode(&[]), [0]);
    assert_eq!(decode(&[0]).unwrap(), []);
}

#[test]
fn changes_come_one_at_a_time_and_a_bad_one_ends_them() {
    let batch = [
        Change::Applied(Record::Event(event("e1", "a"))),
        Change::Applied(Record::Event(event("e2", "b"))),
    ];
    let bytes = encode(&batch);
    let all = changes(&bytes).unwrap();
    assert_eq!(all.capacity_hint(), 2);
    let got: Vec<_> = all.collect::<Result<_, _>>().unwrap();
    assert_eq!(got, batch);
    // The second change cut short: the first, then one error, then none.
    let mut it = changes(&bytes[..bytes.len() - 3]).unwrap();
    assert_eq!(it.next(), Some(Ok(batch[0].clone())));
    let err = it.next().unwrap().unwrap_err();
    assert!(err.to_string().contains("1 changes left"), "{err}");
    assert_eq!(it.next(), None);
    // A count no buffer could hold reserves nothing.
    let huge = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 2, 1, 0, 0, 0,
    ];
    assert_eq!(changes(&huge).unwrap().capacity_hint(), 1);
}

/// Layout 2 as `wit/README.md` documents it, byte by byte: the header's
/// two `u32`s, fixed-width little-endian integers, each string the end of
/// its text in the block after the records.
fn tombstone_v2() -> Vec<u8> {
    let mut bytes = vec![
        1, 0, 0, 0, // one change
        18, 0, 0, 0, // 18 bytes of records
        2, // case `tombstone`
        1, // kind `pod`
        2, 0, 0, 0, // uid: the text up to byte 2
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // seconds -2
        0x2c, 0x01, 0, 0, // nanos 300
    ];
    bytes.extend_from_slice(b"u1"); // the text block
    bytes
}

#[test]
fn a_tombstone_is_laid_out_as_documented_in_layout_2() {
    let batch = [Change::Tombstone(Tombstone {
        kind: RecordKind::Pod,
        uid: "u1",
        at: Timestamp {
            seconds: -2,
            nanos: 300,
        },
    })];
    let bytes = tombstone_v2();
    assert_eq!(decode_v2(&bytes).unwrap(), batch);
    let mut it = changes_v2(&bytes).unwrap();
    assert_eq!(it.capacity_hint(), 1);
    assert!(matches!(it.next(), Some(Ok(_))));
    assert_eq!(it.next(), None);
    // An empty batch is its header.
    assert_eq!(decode_v2(&[0; 8]).unwrap(), []);
}

#[test]
fn a_malformed_layout_2_buffer_is_an_error_naming_what_is_wrong() {
    let bytes = tombstone_v2();
    let err = |bytes: &[u8]| decode_v2(bytes).expect_err("malformed").to_string();
    // Cut short at every length (the header then says more than follows,
    // or the text is cut and its end lies outside it).
    for end in 0..bytes.len() {
        let e = err(&bytes[..end]);
        assert!(e.starts_with("not a packed batch: layout 2: "), "{e}");
    }
    assert!(err(&bytes[..5]).contains("8-byte header"));
    assert!(err(&bytes[..20]).contains("18 bytes of records"));
    // Text left after the last change.
    let mut longer = bytes.clone();
    longer.push(b'x');
    assert!(err(&longer).contains("0 bytes of records and 1 of text left"));
    // Records left after it: a count of zero.
    let mut none = bytes.clone();
    none[0] = 0;
    assert!(err(&none).contains("18 bytes of records"), "{}", err(&none));
    // A case index past the variant's cases.
    let mut bad = bytes.clone();
    bad[9] = 3;
    assert!(
        err(&bad).contains("case 3 is not a record-kind"),
        "{}",
        err(&bad)
    );
    // Text that is not UTF-8, checked once for the block.
    let mut bad = bytes.clone();
    bad[26] = 0xff;
    assert!(err(&bad).contains("not UTF-8"), "{}", err(&bad));
    // A string ending past the block, or inside a character.
    let mut bad = bytes.clone();
    bad[10] = 3;
    assert!(err(&bad).contains("a string ending at 3"), "{}", err(&bad));
    let mut bad = tombstone_v2();
    bad.truncate(26);
    bad.extend_from_slice("é".as_bytes());
    bad[10] = 1;
    assert!(err(&bad).contains("a string ending at 1"), "{}", err(&bad));
    // A count far past the records reserves nothing.
    let mut huge = bytes.clone();
    huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(changes_v2(&huge).unwrap().capacity_hint(), 1);
    assert!(
        err(&huge).contains("4294967294 changes left"),
        "{}",
        err(&huge)
    );
}
