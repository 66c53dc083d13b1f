use super::*;

fn parse(pairs: &[(&str, &str)]) -> Result<Config, SettingsError> {
    let s: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::parse(&s)
}

#[test]
fn routes_take_their_keys_and_vendor_defaults() {
    let c = parse(&[
        (
            "route.ding.url",
            "https://oapi.dingtalk.com/robot/send?access_token=abc",
        ),
        ("route.ding.format", "dingtalk"),
        ("route.ding.secret", "SECxyz"),
        ("route.ding.match.type", "Warning"),
        ("route.all.url", "http://127.0.0.1:8080"),
        ("route.all.header.Authorization", "Bearer t"),
        ("route.all.rate_limit", "5/2s"),
        ("route.all.batch", "3"),
        ("drop.sys.namespace", "kube-system"),
        ("wait_in_call", "2s"),
    ])
    .unwrap();
    assert_eq!(c.routes.len(), 2);
    let all = &c.routes[0];
    assert_eq!(all.name, "all");
    assert_eq!(all.format, Format::Json);
    assert_eq!(all.url.path_with_query, "/");
    assert_eq!(
        all.rate,
        Some(Rate {
            count: 5,
            period_ms: 2000
        })
    );
    assert_eq!(all.batch, 3);
    assert_eq!(
        all.headers,
        vec![("authorization".into(), "Bearer t".into())]
    );
    let ding = &c.routes[1];
    assert_eq!(ding.url.authority, "oapi.dingtalk.com");
    assert_eq!(ding.url.path_with_query, "/robot/send?access_token=abc");
    assert_eq!(
        ding.rate,
        Some(Rate {
            count: 20,
            period_ms: 60_000
        })
    );
    assert_eq!(ding.batch, 10);
    assert_eq!(ding.secret.as_deref(), Some("SECxyz"));
    assert_eq!(c.drops.len(), 1);
    assert_eq!(c.wait_in_call_ms, 2000);
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("SECxyz") && !shown.contains("access_token"),
        "{shown}"
    );
}

fn key_of(pairs: &[(&str, &str)]) -> String {
    let e = parse(pairs).unwrap_err();
    assert!(e.to_string().contains(&e.key), "{e}");
    e.key
}

#[test]
fn bad_settings_name_the_key() {
    assert_eq!(key_of(&[("colour", "red")]), "colour");
    assert_eq!(key_of(&[]), "route.NAME.url");
    assert_eq!(key_of(&[("route.a.format", "slack")]), "route.a.url");
    assert_eq!(key_of(&[("route.a.url", "ftp://x")]), "route.a.url");
    assert_eq!(
        key_of(&[("route.a.url", "https://h"), ("route.a.format", "discord")]),
        "route.a.format"
    );
    assert_eq!(
        key_of(&[("route.a.url", "https://h"), ("route.a.secret", "s")]),
        "route.a.secret"
    );
    assert_eq!(
        key_of(&[("route.a.url", "https://h"), ("route.a.match.message", "(")]),
        "route.a.match.message"
    );
    assert_eq!(
        key_of(&[("route.a.url", "https://h"), ("route.a.rate_limit", "fast")]),
        "route.a.rate_limit"
    );
    assert_eq!(
        key_of(&[("route.a.url", "https://h"), ("route.a.batch", "0")]),
        "route.a.batch"
    );
    assert_eq!(
        key_of(&[("route.a.url", "https://h"), ("route.a.colour", "red")]),
        "route.a.colour"
    );
    assert_eq!(key_of(&[("route.a b.url", "https://h")]), "route.a b.url");
    assert_eq!(
        key_of(&[("route.a.url", "https://h"), ("route.a.msgtype", "text")]),
        "route.a.msgtype"
    );
    assert_eq!(
        key_of(&[
            ("route.a.url", "https://h"),
            ("route.a.format", "wechat"),
            ("route.a.msgtype", "card")
        ]),
        "route.a.msgtype"
    );
    assert_eq!(key_of(&[("wait_in_call", "1m")]), "wait_in_call");
    assert_eq!(key_of(&[("drop.x", "y")]), "drop.x");
}

#[test]
fn urls_split_for_wasi_http() {
    let u = Url::parse("https://Hooks.Slack.com/services/T/B/X").unwrap();
    assert_eq!(u.scheme, Scheme::Https);
    assert_eq!(u.authority, "hooks.slack.com");
    assert_eq!(u.path_with_query, "/services/T/B/X");
    assert_eq!(format!("{u:?}"), "https://hooks.slack.com");
    let q = Url::parse("http://127.0.0.1:9/?k=v").unwrap();
    assert_eq!(q.path_with_query, "/?k=v");
    assert_eq!(Url::parse("http://h?k=v").unwrap().path_with_query, "/?k=v");
    assert!(Url::parse("https://u:p@h/").is_err());
    assert!(Url::parse("https://h/#x").is_err());
    assert!(Url::parse("https:///x").is_err());
}

#[test]
fn durations_and_rates() {
    assert_eq!(duration_ms("500ms"), Ok(500));
    assert_eq!(duration_ms("1h"), Ok(3_600_000));
    assert!(duration_ms("1d").is_err());
    assert_eq!(rate("none"), Ok(None));
    assert!(rate("0/1m").is_err());
    assert!(rate("1/0s").is_err());
}
