use super::*;

// Neither vendor publishes a worked example with values; these were
// computed with the Python sample code each vendor's page shows (DingTalk:
// `hmac.new(secret, f"{ts}\n{secret}", sha256)`, then `quote_plus(b64)`;
// Feishu: `hmac.new(f"{ts}\n{secret}", b"", sha256)`), run on CPython.

#[test]
fn dingtalk_signature_matches_the_vendor_sample_code() {
    let secret = "SEC000000000000000000000000000000000000000000000000000000000000000";
    let sign = dingtalk_sign(1_577_836_800_000, secret);
    assert_eq!(sign, "Hn4QXeBUPUzS5COoMMFE5Tcr7VtbYqokWBziOgXyEe4=");
    assert_eq!(
        url_encode(&sign),
        "Hn4QXeBUPUzS5COoMMFE5Tcr7VtbYqokWBziOgXyEe4%3D"
    );
}

#[test]
fn feishu_signature_matches_the_vendor_sample_code() {
    assert_eq!(
        feishu_sign(1_599_360_473, "demo-secret"),
        "3/MaVZ8JLIy4TUG+7KSFJqvUkTKd+HWY8g+56DZWq8s="
    );
}

#[test]
fn url_encoding_leaves_only_unreserved_characters() {
    assert_eq!(url_encode("a+b/c=d e~"), "a%2Bb%2Fc%3Dd%20e~");
}

fn msg() -> Message {
    Message {
        title: "kubesink".into(),
        lines: vec!["one".into(), "two \"quoted\"".into()],
        plain: false,
    }
}

#[test]
fn dingtalk_and_wechat_send_text_messages_when_asked() {
    let m = Message {
        plain: true,
        ..msg()
    };
    for f in [Format::DingTalk, Format::WeChat] {
        let b = chat_body(f, &m, None);
        assert_eq!(b["msgtype"], "text");
        assert_eq!(b["text"]["content"], "kubesink\none\ntwo \"quoted\"");
    }
}

#[test]
fn chat_bodies_follow_each_vendor_shape() {
    let m = msg();
    let slack = chat_body(Format::Slack, &m, None);
    assert_eq!(slack["text"], "*kubesink*\none\ntwo \"quoted\"");
    let ding = chat_body(Format::DingTalk, &m, None);
    assert_eq!(ding["msgtype"], "markdown");
    assert_eq!(ding["markdown"]["title"], "kubesink");
    assert!(
        ding["markdown"]["text"]
            .as_str()
            .unwrap()
            .contains("one\n\ntwo")
    );
    let feishu = chat_body(Format::Feishu, &m, Some((1_599_360_473, "s".into())));
    assert_eq!(feishu["msg_type"], "text");
    assert_eq!(feishu["timestamp"], "1599360473");
    assert_eq!(feishu["sign"], "s");
    assert_eq!(feishu["content"]["text"], "kubesink\none\ntwo \"quoted\"");
    let unsigned = chat_body(Format::Feishu, &m, None);
    assert!(unsigned.get("sign").is_none());
    let wechat = chat_body(Format::WeChat, &m, None);
    assert_eq!(wechat["msgtype"], "markdown");
    assert!(
        wechat["markdown"]["content"]
            .as_str()
            .unwrap()
            .starts_with("**kubesink**\n")
    );
    let teams = chat_body(Format::Teams, &m, None);
    assert_eq!(teams["type"], "message");
    let card = &teams["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert_eq!(card["content"]["body"].as_array().unwrap().len(), 3);
    let legacy = chat_body(Format::TeamsMessageCard, &m, None);
    assert_eq!(legacy["@type"], "MessageCard");
    assert_eq!(legacy["summary"], "kubesink");
}

#[test]
fn answers_are_read_per_vendor() {
    assert_eq!(verdict(Format::Slack, 200, None, b"ok", 0), Verdict::Ok);
    assert_eq!(verdict(Format::Teams, 202, None, b"", 0), Verdict::Ok);
    assert_eq!(
        verdict(
            Format::DingTalk,
            200,
            None,
            br#"{"errcode":0,"errmsg":"ok"}"#,
            0
        ),
        Verdict::Ok
    );
    assert_eq!(
        verdict(
            Format::Feishu,
            200,
            None,
            br#"{"code":0,"msg":"success","data":{}}"#,
            0
        ),
        Verdict::Ok
    );
    assert_eq!(
        verdict(
            Format::Feishu,
            200,
            None,
            br#"{"StatusCode":0,"StatusMessage":"success"}"#,
            0
        ),
        Verdict::Ok
    );
    match verdict(
        Format::Feishu,
        200,
        None,
        br#"{"code":19021,"msg":"sign match fail"}"#,
        0,
    ) {
        Verdict::Reject(m) => assert!(m.contains("19021"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        verdict(Format::DingTalk, 200, None, br#"{"errcode":130101,"errmsg":"send too fast"}"#, 0),
        Verdict::Retry {
            why: "dingtalk code 130101 (rate limited): {\\\"errcode\\\":130101,\\\"errmsg\\\":\\\"send too fast\\\"}".into(),
            after_ms: Some(60_000)
        }
    );
    assert!(matches!(
        verdict(Format::WeChat, 200, None, br#"{"errcode":45009}"#, 0),
        Verdict::Retry {
            after_ms: Some(60_000),
            ..
        }
    ));
    assert!(matches!(
        verdict(Format::Slack, 429, Some("3"), b"rate_limited", 0),
        Verdict::Retry {
            after_ms: Some(3_000),
            ..
        }
    ));
    assert!(matches!(
        verdict(Format::Json, 503, None, b"", 0),
        Verdict::Retry { after_ms: None, .. }
    ));
    match verdict(Format::Slack, 404, None, b"no_service\n\x1b[31m", 0) {
        Verdict::Reject(m) => {
            assert!(m.starts_with("HTTP 404: no_service"), "{m}");
            assert!(!m.contains('\x1b'), "escaped: {m}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn retry_after_takes_seconds_or_an_http_date() {
    assert_eq!(retry_after_ms("120", 0), Some(120_000));
    // 1994-11-06T08:49:37Z = 784111777 s.
    let at = 784_111_777_000;
    assert_eq!(
        retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", at - 5_000),
        Some(5_000)
    );
    assert_eq!(
        retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", at + 1),
        Some(0)
    );
    assert_eq!(retry_after_ms("soon", 0), None);
}

#[test]
fn formats_parse_by_name_and_list_the_choices() {
    assert_eq!(Format::parse("dingtalk"), Ok(Format::DingTalk));
    let e = Format::parse("discord").unwrap_err();
    assert!(e.contains("`discord`") && e.contains("slack"), "{e}");
    for (name, f) in Format::ALL {
        assert_eq!(f.name(), name);
    }
}
