use super::*;
use crate::bindings::kubesink::sink::types::{Event, Meta, ObjectRef, Record, Timestamp};

fn ts(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

fn event(uid: &str, ns: &str, kind: &str, reason: &str, message: &str) -> Change {
    Change::Applied(Record::Event(Event {
        meta: Meta {
            uid: uid.into(),
            name: format!("{uid}.ev"),
            namespace: ns.into(),
            resource_version: "7".into(),
            resource_version_num: 7,
            labels: vec![],
            created: ts(1_772_438_400),
        },
        involved: ObjectRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: ns.into(),
            name: format!("{uid}-pod"),
            uid: String::new(),
        },
        event_type: kind.into(),
        reason: reason.into(),
        message: message.into(),
        source: "kubelet".into(),
        count: 1,
        first_seen: ts(1_772_438_400),
        last_seen: ts(1_772_438_400),
        region: String::new(),
    }))
}

fn warnings(n: usize) -> Vec<Change> {
    (0..n)
        .map(|i| {
            event(
                &format!("u{i}"),
                "ml",
                "Warning",
                "BackOff",
                &format!("m{i}"),
            )
        })
        .collect()
}

/// Answers from a script (200 when it runs out), a clock that only moves
/// when the sink sleeps or the test says so. `now` is the monotonic
/// clock; the wall clock reads `now + wall_step` (a test steps it).
struct Fake {
    sent: Vec<HttpRequest>,
    answers: VecDeque<Result<HttpResponse, TransportError>>,
    now: u64,
    wall_step: i64,
    slept: Vec<u64>,
    /// How long each request takes, in ms of `now`.
    round_trip: u64,
}

impl Transport for Fake {
    fn send(&mut self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        self.sent.push(req);
        self.now += self.round_trip;
        // A body every vendor reads as success.
        self.answers.pop_front().unwrap_or(Ok(HttpResponse {
            status: 200,
            headers: vec![],
            body: br#"{"errcode":0,"code":0}"#.to_vec(),
        }))
    }
    fn now_ms(&self) -> u64 {
        self.now.saturating_add_signed(self.wall_step)
    }
    fn mono_ms(&self) -> u64 {
        self.now
    }
    fn sleep_ms(&mut self, ms: u64) {
        self.slept.push(ms);
        self.now += ms;
    }
}

fn fake() -> Fake {
    Fake {
        sent: vec![],
        answers: VecDeque::new(),
        now: 1_772_438_400_000,
        wall_step: 0,
        slept: vec![],
        round_trip: 0,
    }
}

fn status(code: u16, retry_after: Option<&str>) -> Result<HttpResponse, TransportError> {
    Ok(HttpResponse {
        status: code,
        headers: retry_after
            .map(|v| vec![("retry-after".to_owned(), v.to_owned())])
            .unwrap_or_default(),
        body: b"busy".to_vec(),
    })
}

fn sink(pairs: &[(&str, &str)]) -> WebhookSink {
    let s: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    WebhookSink::new(Config::parse(&s).unwrap()).unwrap()
}

/// One slack route, a message per record, at most `rate`.
fn rate_limited(rate: &str) -> WebhookSink {
    sink(&[
        ("route.a.url", "http://r/"),
        ("route.a.format", "slack"),
        ("route.a.batch", "1"),
        ("route.a.rate_limit", rate),
    ])
}

fn body(r: &HttpRequest) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn header<'a>(r: &'a HttpRequest, name: &str) -> &'a str {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap()
}

#[test]
fn records_go_to_every_route_that_takes_them_in_batches() {
    let mut s = sink(&[
        ("route.all.url", "http://r/all"),
        ("route.all.batch", "2"),
        ("route.warn.url", "http://r/warn"),
        ("route.warn.format", "slack"),
        ("route.warn.match.reason", "Failed"),
    ]);
    let mut batch = warnings(3);
    batch.push(event("f", "ml", "Warning", "Failed", "image pull failed"));
    let mut t = fake();
    s.write(&mut t, &batch).unwrap();
    let paths: Vec<&str> = t.sent.iter().map(|r| r.path_with_query.as_str()).collect();
    assert_eq!(paths, ["/all", "/all", "/warn"]);
    assert_eq!(body(&t.sent[0])["records"].as_array().unwrap().len(), 2);
    assert_eq!(
        body(&t.sent[0])["records"][0]["record"]["meta"]["uid"],
        "u0"
    );
    assert_eq!(body(&t.sent[1])["records"][1]["record"]["reason"], "Failed");
    assert_eq!(
        body(&t.sent[2])["text"],
        "*kubesink*\n[Warning] Pod ml/f-pod: Failed - image pull failed"
    );
    assert_eq!(header(&t.sent[0], "x-kubesink-records"), "2");
}

#[test]
fn a_template_gets_the_whole_record() {
    let mut s = sink(&[
        ("route.a.url", "http://r/"),
        ("route.a.format", "wechat"),
        (
            "route.a.template",
            "{{ route }} {{ kind }}/{{ change }} {{ record.meta.namespace }} {{ record.involved.name | upper }} {{ record.first_seen }}",
        ),
        ("route.j.url", "http://r/j"),
        (
            "route.j.template",
            r#"{"msg": {{ record.message | tojson }}, "n": {{ record.count }}}"#,
        ),
    ]);
    let mut t = fake();
    s.write(
        &mut t,
        &[event("x", "ml", "Normal", "Pulled", "a \"quoted\" text")],
    )
    .unwrap();
    assert_eq!(
        body(&t.sent[0])["markdown"]["content"],
        "**kubesink**\na event/applied ml X-POD 2026-03-02T08:00:00Z"
    );
    assert_eq!(
        body(&t.sent[1])["records"][0],
        serde_json::json!({"msg": "a \"quoted\" text", "n": 1})
    );
}

#[test]
fn a_template_that_does_not_compile_names_its_setting() {
    let s: Vec<(String, String)> = vec![
        ("route.a.url".into(), "http://r/".into()),
        ("route.a.template".into(), "{{ record.reason ".into()),
    ];
    let e = WebhookSink::new(Config::parse(&s).unwrap()).unwrap_err();
    assert_eq!(e.key, "route.a.template");
}

#[test]
fn json_template_output_that_is_not_json_is_fatal_naming_the_route() {
    let mut s = sink(&[
        ("route.j.url", "http://r/"),
        ("route.j.template", "{{ record.reason }}"),
    ]);
    let e = s.write(&mut fake(), &warnings(1)).unwrap_err();
    assert!(
        matches!(&e, SinkError::Fatal(m) if m.contains("route `j`") && m.contains("not JSON")),
        "{e:?}"
    );
}

#[test]
fn dingtalk_urls_and_feishu_bodies_are_signed_at_send_time() {
    let mut s = sink(&[
        (
            "route.d.url",
            "https://oapi.dingtalk.com/robot/send?access_token=T",
        ),
        ("route.d.format", "dingtalk"),
        ("route.d.secret", "SECabc"),
        (
            "route.f.url",
            "https://open.feishu.cn/open-apis/bot/v2/hook/H",
        ),
        ("route.f.format", "feishu"),
        ("route.f.secret", "fsecret"),
    ]);
    let mut t = fake();
    t.answers.push_back(Ok(HttpResponse {
        status: 200,
        headers: vec![],
        body: br#"{"errcode":0,"errmsg":"ok"}"#.to_vec(),
    }));
    t.answers.push_back(Ok(HttpResponse {
        status: 200,
        headers: vec![],
        body: br#"{"code":0,"msg":"success"}"#.to_vec(),
    }));
    s.write(&mut t, &warnings(1)).unwrap();
    let now = t.now;
    let want = format!(
        "/robot/send?access_token=T&timestamp={now}&sign={}",
        format::url_encode(&format::dingtalk_sign(now, "SECabc"))
    );
    assert_eq!(t.sent[0].path_with_query, want);
    let f = body(&t.sent[1]);
    assert_eq!(f["timestamp"], (now / 1000).to_string());
    assert_eq!(f["sign"], format::feishu_sign(now / 1000, "fsecret"));
}

#[test]
fn a_short_retry_after_is_waited_for_inside_the_call_with_the_same_key() {
    let mut s = sink(&[("route.a.url", "http://r/")]);
    let mut t = fake();
    t.answers.push_back(status(429, Some("2")));
    s.write(&mut t, &warnings(1)).unwrap();
    assert_eq!(t.slept, [2000]);
    assert_eq!(t.sent.len(), 2);
    assert_eq!(
        header(&t.sent[0], "idempotency-key"),
        header(&t.sent[1], "idempotency-key")
    );
    assert_eq!(header(&t.sent[0], "idempotency-key").len(), 64);
}

#[test]
fn a_long_retry_after_goes_back_to_the_host_and_holds_the_route_until_then() {
    let mut s = sink(&[("route.a.url", "http://r/"), ("wait_in_call", "1s")]);
    let mut t = fake();
    t.answers.push_back(status(503, Some("30")));
    let batch = warnings(2);
    let e = s.write(&mut t, &batch).unwrap_err();
    assert!(
        matches!(&e, SinkError::Retryable(m) if m.contains("HTTP 503") && m.contains("http://r")),
        "{e:?}"
    );
    assert!(t.slept.is_empty());
    // The host retries early: nothing is sent.
    t.now += 10_000;
    let e = s.write(&mut t, &batch).unwrap_err();
    assert!(
        matches!(&e, SinkError::Retryable(m) if m.contains("Retry-After")),
        "{e:?}"
    );
    assert_eq!(t.sent.len(), 1);
    // 30 s after the answer, to the millisecond the clock reads: the
    // answer may have come up to 1 ms after that reading, so it waits on.
    t.now += 20_000;
    assert!(s.write(&mut t, &batch).is_err());
    assert_eq!(t.sent.len(), 1);
    t.now += 1;
    s.write(&mut t, &batch).unwrap();
    assert_eq!(t.sent.len(), 2);
    assert_eq!(
        header(&t.sent[0], "idempotency-key"),
        header(&t.sent[1], "idempotency-key")
    );
}

/// Retry-After counts from the answer: a request that took 400 ms (a
/// connection set up, a slow receiver) does not bring the retry earlier.
#[test]
fn retry_after_counts_from_the_answer_not_from_the_request() {
    let mut s = sink(&[("route.a.url", "http://r/"), ("wait_in_call", "1s")]);
    let mut t = fake();
    t.round_trip = 400;
    t.answers.push_back(status(429, Some("3")));
    let batch = warnings(2);
    let sent_at = t.now;
    assert!(s.write(&mut t, &batch).is_err());
    let answered_at = t.now;
    assert_eq!(answered_at, sent_at + 400);
    // 3 s after the request went out, but not after the answer: held.
    t.now = sent_at + 3_000 + 1;
    assert!(s.write(&mut t, &batch).is_err());
    assert_eq!(t.sent.len(), 1);
    t.now = answered_at + 3_000 + 1;
    s.write(&mut t, &batch).unwrap();
    assert_eq!(t.sent.len(), 2);
}

#[test]
fn a_redelivered_batch_skips_the_messages_already_accepted() {
    let mut s = sink(&[
        ("route.a.url", "http://r/a"),
        ("route.a.batch", "1"),
        ("route.b.url", "http://r/b"),
    ]);
    let mut t = fake();
    // a: first ok, second 500 (no Retry-After: back to the host).
    t.answers.push_back(status(200, None));
    t.answers.push_back(status(500, None));
    // (status 200 with "busy": fine for the json format, which reads no body)
    let batch = warnings(3);
    assert!(matches!(
        s.write(&mut t, &batch),
        Err(SinkError::Retryable(_))
    ));
    // Route b was still tried in that call.
    let paths: Vec<&str> = t.sent.iter().map(|r| r.path_with_query.as_str()).collect();
    assert_eq!(paths, ["/a", "/a", "/b"]);
    s.write(&mut t, &batch).unwrap();
    let paths: Vec<&str> = t.sent.iter().map(|r| r.path_with_query.as_str()).collect();
    assert_eq!(paths, ["/a", "/a", "/b", "/a", "/a"]);
    assert_eq!(
        header(&t.sent[1], "idempotency-key"),
        header(&t.sent[3], "idempotency-key")
    );
}

#[test]
fn client_errors_and_denials_are_fatal() {
    let mut s = sink(&[("route.a.url", "http://r/")]);
    let mut t = fake();
    t.answers.push_back(status(400, None));
    assert!(
        matches!(s.write(&mut t, &warnings(1)), Err(SinkError::Fatal(m)) if m.contains("HTTP 400"))
    );
    t.answers
        .push_back(Err(TransportError::Denied("HttpRequestDenied".into())));
    assert!(
        matches!(s.write(&mut t, &warnings(1)), Err(SinkError::Fatal(m)) if m.contains("allow_hosts"))
    );
}

#[test]
fn the_rate_limit_holds_and_what_it_keeps_back_is_summarized_once() {
    let mut s = rate_limited("3/1m");
    let mut t = fake();
    let batch = warnings(10);
    s.write(&mut t, &batch).unwrap();
    assert_eq!(t.sent.len(), 3);
    // The host redelivers the same batch: nothing more, nothing counted twice.
    s.write(&mut t, &batch).unwrap();
    assert_eq!(t.sent.len(), 3);
    // A minute later: the summary first, then new records.
    t.now += 60_000;
    let more: Vec<Change> = (0..2)
        .map(|i| event(&format!("n{i}"), "ml", "Normal", "Pulled", "x"))
        .collect();
    s.write(&mut t, &more).unwrap();
    assert_eq!(t.sent.len(), 6);
    let text = body(&t.sent[3])["text"].as_str().unwrap().to_owned();
    assert!(text.contains("7 records not sent"), "{text}");
    assert!(text.contains("7× Warning BackOff"), "{text}");
    assert!(text.contains("3 messages per 60s"), "{text}");
    assert!(
        body(&t.sent[4])["text"]
            .as_str()
            .unwrap()
            .contains("Pulled")
    );
    // No second summary while nothing more was kept back.
    t.now += 60_000;
    s.write(&mut t, &more[..1]).unwrap();
    assert_eq!(t.sent.len(), 6, "already delivered, no new summary");
}

/// The rate limit and a `Retry-After` hold measure time on the monotonic
/// clock: the wall clock set back an hour does not stop the tokens
/// refilling or stretch the hold; set forward an hour, it grants no burst
/// and does not end the hold early.
#[test]
fn a_step_of_the_wall_clock_neither_stalls_nor_bursts_the_rate_limit() {
    let mut s = rate_limited("2/1m");
    let mut t = fake();
    s.write(&mut t, &warnings(2)).unwrap();
    assert_eq!(t.sent.len(), 2);
    // Forward an hour: no new tokens, the record is kept back.
    t.wall_step = 3_600_000;
    let one = |uid: &str| vec![event(uid, "ml", "Warning", "BackOff", "x")];
    s.write(&mut t, &one("f1")).unwrap();
    assert_eq!(t.sent.len(), 2, "a wall-clock step forward granted tokens");
    // Back two hours (an hour behind where it began), a minute passing: the
    // tokens refill; the summary of the one kept back goes, then the new one.
    t.wall_step = -3_600_000;
    t.now += 60_000;
    s.write(&mut t, &one("b1")).unwrap();
    assert_eq!(t.sent.len(), 4, "a wall-clock step back stalled the limit");
    assert!(
        body(&t.sent[2])["text"]
            .as_str()
            .unwrap()
            .contains("1 records not sent")
    );

    // A hold of 120 s asked for by the receiver.
    let mut s = sink(&[("route.a.url", "http://r/")]);
    let mut t = fake();
    t.answers.push_back(status(429, Some("120")));
    assert!(s.write(&mut t, &warnings(1)).is_err());
    t.wall_step = 3_600_000;
    assert!(
        matches!(s.write(&mut t, &warnings(1)), Err(SinkError::Retryable(m)) if m.contains("Retry-After")),
        "a wall-clock step forward ended the hold early"
    );
    t.wall_step = -3_600_000;
    t.now += 121_000;
    s.write(&mut t, &warnings(1)).unwrap();
    assert_eq!(t.sent.len(), 2, "a wall-clock step back stretched the hold");
}

#[test]
fn drop_rules_and_global_drops_filter_records() {
    let mut s = sink(&[
        ("route.a.url", "http://r/"),
        ("route.a.drop.noisy.reason", "BackOff"),
        ("drop.sys.namespace", "kube-system"),
    ]);
    let mut t = fake();
    s.write(
        &mut t,
        &[
            event("1", "ml", "Warning", "BackOff", ""),
            event("2", "kube-system", "Warning", "Failed", ""),
            event("3", "ml", "Warning", "Failed", ""),
        ],
    )
    .unwrap();
    assert_eq!(t.sent.len(), 1);
    let b = body(&t.sent[0]);
    assert_eq!(b["records"].as_array().unwrap().len(), 1);
    assert_eq!(b["records"][0]["record"]["meta"]["uid"], "3");
}

#[test]
fn long_texts_are_cut_to_the_vendor_limit_and_split_into_messages() {
    let mut s = sink(&[("route.w.url", "http://r/"), ("route.w.format", "wechat")]);
    let mut t = fake();
    let big = "界".repeat(3000);
    let batch: Vec<Change> = (0..3)
        .map(|i| event(&format!("b{i}"), "ml", "Warning", "X", &big))
        .collect();
    s.write(&mut t, &batch).unwrap();
    assert_eq!(t.sent.len(), 3);
    for r in &t.sent {
        let c = body(r)["markdown"]["content"].as_str().unwrap().len();
        assert!(c <= 4096, "{c} bytes");
    }
    // Text messages: 2,048 bytes.
    let mut s = sink(&[
        ("route.w.url", "http://r/"),
        ("route.w.format", "wechat"),
        ("route.w.msgtype", "text"),
    ]);
    let mut t = fake();
    s.write(&mut t, &batch).unwrap();
    assert_eq!(t.sent.len(), 3);
    for r in &t.sent {
        let c = body(r)["text"]["content"].as_str().unwrap().len();
        assert!(c <= 2048, "{c} bytes");
    }
}

#[test]
fn max_age_skips_records_older_than_it() {
    let mut s = sink(&[("route.a.url", "http://r/"), ("route.a.max_age", "10m")]);
    let mut t = fake();
    // The events' last_seen is the fake clock's start.
    t.now += 9 * 60_000;
    s.write(&mut t, &warnings(1)).unwrap();
    assert_eq!(t.sent.len(), 1);
    t.now += 2 * 60_000;
    let old = vec![event("old", "ml", "Warning", "BackOff", "")];
    s.write(&mut t, &old).unwrap();
    assert_eq!(t.sent.len(), 1, "an 11-minute-old event is not sent");
}

#[test]
fn a_route_waiting_for_retry_after_does_not_fail_a_batch_it_has_nothing_in() {
    let mut s = sink(&[
        ("route.a.url", "http://r/a"),
        ("route.a.match.reason", "BackOff"),
        ("route.a.batch", "1"),
        ("route.a.rate_limit", "1/1s"),
        ("wait_in_call", "0s"),
    ]);
    let mut t = fake();
    // One sent, one kept back; then a 429 for 60 s on the next message.
    s.write(&mut t, &warnings(2)).unwrap();
    t.now += 1_000;
    t.answers.push_back(status(429, Some("60")));
    let next = vec![event("n", "ml", "Warning", "BackOff", "")];
    assert!(matches!(
        s.write(&mut t, &next),
        Err(SinkError::Retryable(_))
    ));
    // A batch with nothing for the route: its pending summary waits.
    let other = vec![event("o", "ml", "Normal", "Pulled", "")];
    s.write(&mut t, &other).unwrap();
    assert_eq!(t.sent.len(), 2);
}

#[test]
fn labels_with_dotted_keys_are_read_by_subscript() {
    let mut s = sink(&[
        ("route.a.url", "http://r/"),
        ("route.a.format", "slack"),
        ("route.a.match.label.app.kubernetes.io/name", "trainer"),
        (
            "route.a.template",
            r#"{{ record.meta.labels["app.kubernetes.io/name"] }}"#,
        ),
    ]);
    let mut e = event("l", "ml", "Warning", "BackOff", "");
    if let Change::Applied(Record::Event(ev)) = &mut e {
        ev.meta.labels = vec![("app.kubernetes.io/name".into(), "trainer".into())];
    }
    let mut t = fake();
    s.write(&mut t, &[e, event("x", "ml", "Warning", "BackOff", "")])
        .unwrap();
    assert_eq!(t.sent.len(), 1);
    assert_eq!(body(&t.sent[0])["text"], "*kubesink*\ntrainer");
}
