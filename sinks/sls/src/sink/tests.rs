use super::*;
use crate::mapping::tests::{event, settings};
use kubesink_packed::{Change, Record};

fn ok() -> Sent {
    Ok(HttpResponse {
        status: 200,
        ..Default::default()
    })
}

/// Records requests and answers from a script (in the order requests
/// are started; 200 when it runs out). Completes the newest request in
/// flight first, so responses come back out of order.
struct Fake {
    sent: Vec<HttpRequest>,
    answers: VecDeque<Sent>,
    most_in_flight: usize,
}

impl Transport for Fake {
    fn send_all(
        &mut self,
        requests: &mut dyn Iterator<Item = HttpRequest>,
        max_in_flight: usize,
        done: &mut dyn FnMut(usize, Sent) -> Flow,
    ) {
        let mut in_flight: Vec<(usize, Sent)> = Vec::new();
        let mut go = true;
        loop {
            while go && in_flight.len() < max_in_flight {
                let Some(request) = requests.next() else {
                    break;
                };
                in_flight.push((self.sent.len(), self.answers.pop_front().unwrap_or_else(ok)));
                self.sent.push(request);
            }
            self.most_in_flight = self.most_in_flight.max(in_flight.len());
            let Some((i, answer)) = in_flight.pop() else {
                break;
            };
            if done(i, answer) == Flow::Stop {
                go = false;
            }
        }
    }
}

fn fake(answers: Vec<Sent>) -> Fake {
    Fake {
        sent: vec![],
        answers: answers.into(),
        most_in_flight: 0,
    }
}

fn sls_error(status: u16, code: &str) -> Sent {
    Ok(HttpResponse {
        status,
        headers: vec![("x-log-requestid".into(), "RID".into())],
        body: format!(r#"{{"errorCode":"{code}","errorMessage":"m \"q\""}}"#).into_bytes(),
    })
}

fn entries(n: usize) -> Vec<Change<'static>> {
    (0..n)
        .map(|i| Change::Applied(Record::Event(event(&format!("u{i}"), 1, "msg"))))
        .collect()
}

#[test]
fn request_is_signed_compressed_and_addressed_like_the_sdk() {
    let s = settings(&[("security_token", "tok")]);
    let raw = encode_group(
        "",
        "src",
        &[Log {
            time: 1,
            time_ns: None,
            contents: vec![("k", "v".repeat(100).into())],
        }],
    );
    let req = put_logs_request(&s, &raw, 0);
    let h = |k: &str| {
        req.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(req.authority, "127.0.0.1:9000");
    assert_eq!(h("host"), Some("proj.127.0.0.1"));
    assert_eq!(req.path_with_query, "/logstores/events/shards/lb");
    assert_eq!(h("x-log-compresstype"), Some("lz4"));
    assert_eq!(h("x-log-bodyrawsize"), Some(raw.len().to_string().as_str()));
    assert_eq!(
        lz4_flex::block::decompress(&req.body, raw.len()).expect("lz4 block"),
        raw
    );
    assert_eq!(
        h("content-md5"),
        Some(sign::content_md5(&req.body).as_str())
    );
    assert_eq!(h("date"), Some("Thu, 01 Jan 1970 00:00:00 GMT"));
    assert_eq!(h("x-acs-security-token"), Some("tok"));
    let sts = sign::string_to_sign(&ToSign {
        method: "POST",
        content_md5: h("content-md5").unwrap_or_default(),
        content_type: "application/x-protobuf",
        date: "Thu, 01 Jan 1970 00:00:00 GMT",
        headers: &req.headers,
        path: "/logstores/events/shards/lb",
        query: &[],
    });
    assert_eq!(
        h("authorization"),
        Some(format!("LOG id:{}", sign::signature("secret", &sts)).as_str())
    );
    let hostname = settings(&[("endpoint", "cn-hangzhou.log.aliyuncs.com")]);
    let req = put_logs_request(&hostname, &raw, 0);
    assert_eq!(req.authority, "proj.cn-hangzhou.log.aliyuncs.com");
    assert_eq!(req.scheme, Scheme::Https);
    assert!(!req.headers.iter().any(|(k, _)| k == "host"));
}

#[test]
fn plan_splits_by_count_and_size_and_groups_by_source() {
    let log = |n: usize| Log {
        time: 1,
        time_ns: None,
        contents: vec![("k", "x".repeat(n).into())],
    };
    let mapped = |src: &'static str, n: usize| Mapped {
        topic: "",
        source: src,
        log: log(n),
    };
    let groups = plan(
        (0..10)
            .map(|_| mapped("a", 10))
            .chain([mapped("b", 10)])
            .collect(),
        1 << 20,
        4,
    );
    assert_eq!(
        groups
            .iter()
            .map(|g| (g.source, g.logs.len()))
            .collect::<Vec<_>>(),
        [("a", 4), ("a", 4), ("a", 2), ("b", 1)]
    );
    let max = 1000;
    let groups = plan((0..20).map(|_| mapped("a", 200)).collect(), max, 4096);
    assert!(groups.len() > 1);
    assert!(
        groups.iter().all(|g| g.encode().len() <= max),
        "a group exceeds {max}"
    );
    assert_eq!(groups.iter().map(|g| g.logs.len()).sum::<usize>(), 20);
    // A log bigger than the whole budget is shrunk, not dropped.
    let groups = plan(vec![mapped("a", 5000)], max, 4096);
    assert_eq!(groups.len(), 1);
    assert!(groups[0].encode().len() <= max);
}

#[test]
fn errors_map_to_retryable_or_fatal_without_the_secret() {
    for (status, code, retry) in [
        (403, "WriteQuotaExceed", true),
        (403, "ShardWriteQuotaExceed", true),
        (500, "InternalServerError", true),
        (503, "ServerBusy", true),
        (400, "PostBodyInvalid", false),
        (401, "SignatureNotMatch", false),
        (404, "LogStoreNotExist", false),
        (413, "PostBodyTooLarge", false),
    ] {
        let mut sink = SlsSink::new(settings(&[]));
        let mut t = fake(vec![sls_error(status, code)]);
        let err = sink.write(&mut t, &entries(1), 0).expect_err("fails");
        let msg = match (&err, retry) {
            (SinkError::Retryable(m), true) | (SinkError::Fatal(m), false) => m,
            _ => panic!("{status} {code} gave {err}"),
        };
        assert!(
            msg.contains(code) && msg.contains("RID") && msg.contains("m \"q\""),
            "{msg}"
        );
        assert!(!msg.contains("secret"), "{msg}");
    }
    let mut sink = SlsSink::new(settings(&[]));
    let err = sink.write(
        &mut fake(vec![Err(TransportError::Network("reset".into()))]),
        &entries(1),
        0,
    );
    assert!(matches!(err, Err(SinkError::Retryable(_))));
    let err = sink.write(
        &mut fake(vec![Err(TransportError::Denied("no".into()))]),
        &entries(1),
        0,
    );
    assert!(matches!(err, Err(SinkError::Fatal(m)) if m.contains("allow-list")));
}

#[test]
fn redelivered_batch_skips_groups_already_delivered() {
    let mut sink = SlsSink::new(settings(&[
        ("max_logs_per_request", "2"),
        ("max_in_flight", "1"),
    ]));
    let batch = entries(5); // 3 requests
    let mut t = fake(vec![ok(), sls_error(503, "ServerBusy")]);
    assert!(matches!(
        sink.write(&mut t, &batch, 0),
        Err(SinkError::Retryable(_))
    ));
    assert_eq!(t.sent.len(), 2, "one at a time: nothing after the failure");
    assert_eq!(t.most_in_flight, 1);
    let mut t = fake(vec![]);
    sink.write(&mut t, &batch, 0).expect("retry succeeds");
    assert_eq!(t.sent.len(), 2, "the first group was not sent again");
    let mut t = fake(vec![]);
    sink.write(&mut t, &batch, 0).expect("third time");
    assert!(t.sent.is_empty());
}

/// Bodies (raw MD5 hex) of the requests sent.
fn bodies(t: &Fake) -> Vec<String> {
    t.sent
        .iter()
        .map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "content-md5")
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn concurrent_partial_failure_resends_only_what_sls_did_not_accept() {
    let mut sink = SlsSink::new(settings(&[
        ("max_logs_per_request", "1"),
        ("max_in_flight", "4"),
    ]));
    let batch = entries(10); // 10 requests
    // Started 0..4; completed newest first: 3 fails (stop), then 2, 1
    // and 0 succeed. 4..10 are never started.
    let mut t = fake(vec![ok(), ok(), ok(), sls_error(503, "ServerBusy")]);
    let err = sink.write(&mut t, &batch, 0).expect_err("fails");
    assert!(
        matches!(&err, SinkError::Retryable(m) if m.contains("ServerBusy")),
        "{err}"
    );
    assert_eq!(t.sent.len(), 4, "no request started after the failure");
    assert_eq!(t.most_in_flight, 4);
    let mut accepted: Vec<String> = bodies(&t);
    let failed = accepted.remove(3);
    let mut t = fake(vec![]);
    sink.write(&mut t, &batch, 0).expect("retry succeeds");
    let resent = bodies(&t);
    assert_eq!(resent.len(), 7, "the failed one and the 6 never started");
    assert_eq!(resent[0], failed);
    for body in &accepted {
        assert!(!resent.contains(body), "an accepted body was sent again");
    }
    assert_eq!(t.most_in_flight, 4, "at most max_in_flight at once");
    let mut all = accepted;
    all.extend(resent);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 10, "every body landed exactly once");
}

#[test]
fn fatal_wins_over_retryable_and_the_others_are_counted() {
    let mut sink = SlsSink::new(settings(&[
        ("max_logs_per_request", "1"),
        ("max_in_flight", "3"),
    ]));
    let mut t = fake(vec![
        sls_error(503, "ServerBusy"),
        Err(TransportError::Denied("HttpRequestDenied".into())),
        sls_error(429, "TooManyRequests"),
    ]);
    let err = sink.write(&mut t, &entries(3), 0).expect_err("fails");
    match err {
        SinkError::Fatal(m) => {
            assert!(m.contains("allow-list"), "{m}");
            assert!(m.contains("2 more failed requests"), "{m}");
        }
        other => panic!("expected fatal, got {other}"),
    }
    // Two retryable failures: the first by request order is reported.
    let mut t = fake(vec![
        sls_error(429, "TooManyRequests"),
        Err(TransportError::Network("reset".into())),
        ok(),
    ]);
    let err = sink.write(&mut t, &entries(3), 0).expect_err("fails");
    assert!(
        matches!(&err, SinkError::Retryable(m) if m.contains("TooManyRequests") && m.contains("1 more")),
        "{err}"
    );
}

#[test]
fn identical_bodies_in_one_batch_are_sent_once() {
    let mut sink = SlsSink::new(settings(&[("max_logs_per_request", "1")]));
    let batch: Vec<Change> = entries(1).into_iter().cycle().take(3).collect();
    let mut t = fake(vec![]);
    sink.write(&mut t, &batch, 0).expect("writes");
    assert_eq!(t.sent.len(), 1);
}
