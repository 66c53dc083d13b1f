use super::*;

fn labels() -> Vec<(String, String)> {
    vec![
        ("app".to_owned(), "trainer".to_owned()),
        ("team".to_owned(), "视觉组".to_owned()),
    ]
}

fn event<'a>(labels: &'a [(String, String)], reason: &'a str, message: &'a str) -> Fields<'a> {
    Fields {
        record: "event",
        namespace: "ml",
        kind: "Pod",
        event_type: "Warning",
        reason,
        message,
        labels,
    }
}

fn rule(conds: &[(&str, &str)]) -> Rule {
    let mut r = Rule::default();
    for (k, v) in conds {
        r.add(k, v).unwrap();
    }
    r
}

#[test]
fn every_condition_must_hold_and_lists_are_alternatives() {
    let l = labels();
    let f = event(&l, "BackOff", "Back-off restarting failed container");
    assert!(rule(&[]).matches(&f));
    assert!(rule(&[("namespace", "default, ml"), ("type", "Warning")]).matches(&f));
    assert!(!rule(&[("namespace", "ml"), ("type", "Normal")]).matches(&f));
    assert!(rule(&[("reason", "Failed,BackOff"), ("kind", "Pod")]).matches(&f));
    assert!(!rule(&[("reason", "Failed")]).matches(&f));
    assert!(rule(&[("record", "event,job")]).matches(&f));
    assert!(!rule(&[("record", "job")]).matches(&f));
}

#[test]
fn message_is_a_regex_searched_anywhere() {
    let l = labels();
    let f = event(&l, "BackOff", "Back-off restarting failed container");
    assert!(rule(&[("message", "restart(ing)? failed")]).matches(&f));
    assert!(rule(&[("message", "(?i)^back-OFF")]).matches(&f));
    assert!(!rule(&[("message", "^restarting")]).matches(&f));
}

#[test]
fn labels_match_by_value_or_presence() {
    let l = labels();
    let f = event(&l, "BackOff", "");
    assert!(rule(&[("label.app", "trainer")]).matches(&f));
    assert!(rule(&[("label.team", "视觉组")]).matches(&f));
    assert!(rule(&[("label.team", "*")]).matches(&f));
    assert!(!rule(&[("label.app", "web")]).matches(&f));
    assert!(!rule(&[("label.owner", "*")]).matches(&f));
}

#[test]
fn event_only_conditions_never_hold_for_jobs() {
    let l = labels();
    let job = Fields {
        record: "job",
        namespace: "ml",
        kind: "TFJob",
        event_type: "",
        reason: "",
        message: "OOMKilled",
        labels: &l,
    };
    assert!(rule(&[("kind", "TFJob"), ("message", "OOM")]).matches(&job));
    assert!(!rule(&[("type", "Warning")]).matches(&job));
}

#[test]
fn drop_rules_win_over_the_match_and_global_drops_apply_too() {
    let l = labels();
    let filter = Filter {
        matching: rule(&[("type", "Warning")]),
        drops: vec![("noisy".into(), rule(&[("reason", "BackOff")]))],
    };
    let global = vec![("ns".to_owned(), rule(&[("namespace", "kube-system")]))];
    assert!(!filter.takes(&event(&l, "BackOff", ""), &global));
    assert!(filter.takes(&event(&l, "Failed", ""), &global));
    let mut sys = event(&l, "Failed", "");
    sys.namespace = "kube-system";
    assert!(!filter.takes(&sys, &global));
}

#[test]
fn bad_conditions_say_what_is_wrong() {
    let mut r = Rule::default();
    assert!(
        r.add("message", "(")
            .unwrap_err()
            .contains("regular expression")
    );
    assert!(r.add("record", "events").unwrap_err().contains("`events`"));
    assert!(r.add("namespace", " , ").unwrap_err().contains("empty"));
    assert!(r.add("colour", "x").unwrap_err().contains("`colour`"));
    assert!(r.is_empty());
}
