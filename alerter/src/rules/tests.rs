//! The rule files: what loads and every refusal, with file, line and reason.

use super::*;

fn env(name: &str) -> Option<String> {
    (name == "HOOK_SECRET").then(|| "s3cret".to_owned())
}

fn error(text: &str) -> String {
    let files = vec![(PathBuf::from("rules/pay.yaml"), text.to_owned())];
    parse(&files, &env, None).expect_err("refused").to_string()
}

const GOOD: &str = r#"
tenant: acme
rules:
  - name: pay-latency
    type: threshold
    service: payments
    filter: 'span.kind="server"'
    group_by: [vigil.unit]
    signal: p99
    window: 1m
    op: ">"
    value: 300
    for: 30s
    labels: {severity: page}
    annotations: {summary: "p99 {{value}} ms in {{vigil.unit}}"}
    actions: [rollback]
  - name: pay-slo
    type: burn_rate
    service: payments
    objective: 99.9
  - name: probe-silent
    type: absence
    kind: probe
    series: pay-e2e
    for: 2m
  - name: errors-unusual
    type: anomaly
    signal: error_ratio
    window: 1m
    method: seasonal
    period: 1w
receivers:
  - name: oncall
    url: http://127.0.0.1:9/hook
    secret_env: HOOK_SECRET
route:
  receiver: oncall
  group_wait: 0s
  routes:
    - matchers: ['severity="ticket"']
      group_interval: 1m
actions:
  - name: rollback
    url: http://127.0.0.1:9/rollback/{{service}}
    body: {unit: "{{vigil.unit}}"}
    cooldown: 10m
"#;

#[test]
fn a_rule_file_reads_into_checked_rules() {
    let files = vec![(PathBuf::from("pay.yaml"), GOOD.to_owned())];
    let set = parse(&files, &env, None).expect("loads");
    assert_eq!(set.rules.len(), 4);
    let latency = &set.rules[0];
    assert_eq!(latency.tenant.as_str(), "acme");
    assert_eq!(latency.for_s, 30);
    assert_eq!(
        latency.check,
        Check::Threshold {
            signal: Signal::Quantile(0.99),
            window_s: 60,
            op: Op::Above,
            value: 300.0,
            min_count: 1,
        }
    );
    assert_eq!(latency.range_s(), 60);
    let Check::BurnRate {
        budget, windows, ..
    } = &set.rules[1].check
    else {
        panic!("a burn-rate rule");
    };
    assert!((budget - 0.001).abs() < 1e-12);
    assert_eq!(
        windows
            .iter()
            .map(|w| (w.long_s, w.short_s, w.factor, w.severity.as_str()))
            .collect::<Vec<_>>(),
        vec![(3_600, 300, 14.4, "page"), (21_600, 1_800, 6.0, "ticket")]
    );
    assert_eq!(set.rules[1].range_s(), 21_600);
    assert_eq!(set.rules[2].check, Check::Absence);
    assert_eq!(set.rules[3].range_s(), 7 * 86_400 + 60);
    assert_eq!(set.receivers["oncall"].secret.as_deref(), Some("s3cret"));
    let route = set.route.expect("a route");
    assert_eq!((route.group_wait_s, route.group_interval_s), (0, 300));
    // A child inherits what it does not set.
    let child = &route.routes[0];
    assert_eq!(child.receiver, "oncall");
    assert_eq!(
        (
            child.group_wait_s,
            child.group_interval_s,
            child.repeat_interval_s
        ),
        (0, 60, 14_400)
    );
    assert_eq!(set.actions["rollback"].cooldown_s, 600);
}

#[test]
fn bad_rules_name_the_file_line_and_reason() {
    let cases: &[(&str, &str)] = &[
        (
            "rules:\n  - name: a\n    type: treshold\n",
            "rules/pay.yaml:3: rules[0].type: unknown variant `treshold`, expected one of `threshold`, `absence`, `burn_rate`, `anomaly`, `canary`, `crash_group`",
        ),
        (
            "rules:\n  - name: a\n    type: threshold\n    signal: p99\n    op: '>'\n    value: 1\n",
            "rules/pay.yaml:2: rule a: no tenant: set `tenant:` on the rule or at the top of the file",
        ),
        (
            "tenant: acme\nrules:\n  - name: a\n    type: threshold\n    signal: p98\n    op: '>'\n    value: 1\n",
            "rules/pay.yaml:3: rule a: signal: unknown signal \"p98\"; one of count, sum, rate, mean, min, max, error_ratio, availability, p50, p90, p95, p99, p999",
        ),
        (
            "tenant: acme\nrules:\n  - name: a\n    type: threshold\n    signal: p99\n    op: '>'\n    value: 1\n    window: 15s\n",
            "rules/pay.yaml:3: rule a: window must be a positive multiple of 10s, got 15000 ms",
        ),
        (
            "tenant: acme\nrules:\n  - name: a\n    type: threshold\n    signal: p99\n    op: '=>'\n    value: 1\n",
            "rules/pay.yaml:6: rules[0].op: unknown variant `=>`, expected one of `>`, `>=`, `<`, `<=`",
        ),
        (
            "tenant: acme\nrules:\n  - name: a\n    type: absence\n    signal: p99\n    for: 1m\n",
            "rules/pay.yaml:3: rule a: signal does not apply to a absence rule",
        ),
        (
            "tenant: acme\nrules:\n  - name: a\n    type: canary\n    service: pay\n    group_by: [vigil.unit]\n",
            "rules/pay.yaml:3: rule a: group_by does not apply to a canary rule: it compares versions, units and cohorts itself",
        ),
        (
            "tenant: acme\nrules:\n  - {name: a, type: canary, kind: metric, service: wallet}\n",
            "rules/pay.yaml:3: rule a: a canary rule judges server spans (kind span) or an app's releases (kind client)",
        ),
        (
            "tenant: acme\nrules:\n  - {name: a, type: canary, kind: client, service: wallet, series: client.crashes}\n",
            "rules/pay.yaml:3: rule a: series does not apply to a client canary rule: it reads the app's crashes, starts, ANRs, frames, battery and traffic itself",
        ),
        (
            "tenant: acme\nrules:\n  - {name: a, type: crash_group}\n",
            "rules/pay.yaml:3: rule a: service is required: the app whose crash groups are watched",
        ),
        (
            "tenant: acme\nrules:\n  - {name: a, type: crash_group, service: w, states: [resolved]}\n",
            "rules/pay.yaml:3: rule a: states: \"resolved\" is not one of new, regressed, ongoing",
        ),
        (
            "tenant: acme\nrules:\n  - {name: a, type: crash_group, service: w, velocity: 2}\n",
            "rules/pay.yaml:3: rule a: velocity must be a share of users above 0 and at most 1, got 2",
        ),
        (
            "tenant: acme\nrules:\n  - {name: a, type: crash_group, service: w, kind: span}\n",
            "rules/pay.yaml:3: rule a: a crash_group rule watches an app's crashes: kind must be client",
        ),
        (
            "tenant: acme\nrules:\n  - {name: a, type: threshold, service: w, signal: rate, op: '>', value: 1, velocity: 0.1}\n",
            "rules/pay.yaml:3: rule a: velocity does not apply to a threshold rule",
        ),
        (
            "tenant: acme\nrules:\n  - {name: a, type: canary, service: pay, significance: 0.9}\n",
            "rules/pay.yaml:3: rule a: significance must be above 0 and at most 0.5 (0.05 is usual)",
        ),
        (
            "tenant: acme\nrules:\n  - name: a\n    type: burn_rate\n    objective: 100\n",
            "rules/pay.yaml:3: rule a: objective must be a percent between 0 and 100 (exclusive), got 100",
        ),
        (
            "tenant: acme\nrules:\n  - name: a\n    type: burn_rate\n    objective: 99\n    windows: [{long: 5m, short: 1h, factor: 2, severity: page}]\n",
            "rules/pay.yaml:3: rule a: windows[0].short must be shorter than long",
        ),
        (
            "tenant: acme\nrules:\n  - name: a\n    type: threshold\n    signal: p99\n    op: '>'\n    value: 1\n    actions: [rollback]\n",
            "rules/pay.yaml:3: rule a: actions: no action is named \"rollback\" (defined: none)",
        ),
        (
            "tenant: acme\nrules:\n  - name: a\n    type: threshold\n    signal: p99\n    op: '>'\n    value: 1\n    filter: unit=u1\n",
            "rules/pay.yaml:3: rule a: filter: the value of unit must be double-quoted",
        ),
        (
            "tenant: acme\nrules:\n  - name: a\n    type: absence\n    for: 1m\n  - name: a\n    type: absence\n    for: 1m\n",
            "rules/pay.yaml:6: rule a: the name is taken by rules/pay.yaml:3",
        ),
        (
            "receivers:\n  - name: hook\n    url: http://x/\n    secret_env: NOT_SET\n",
            "rules/pay.yaml:2: receiver hook: secret_env: the environment variable NOT_SET is not set",
        ),
        (
            "receivers:\n  - name: hook\n    url: http://x/\nroute:\n  receiver: pager\n",
            "rules/pay.yaml:4: route: no receiver is named \"pager\" (defined: hook)",
        ),
        (
            "actions:\n  - name: roll\n    url: ftp://x/\n",
            "rules/pay.yaml:2: action roll: url must start with http:// or https://, got \"ftp://x/\"",
        ),
        (
            "actions:\n  - name: roll\n    url: \"https://{{service}}.ops/rollback\"\n",
            "rules/pay.yaml:2: action roll: url: the scheme and host must be written out, variables may fill only the path and query, got \"https://{{service}}.ops/rollback\"",
        ),
        (
            "tenant: acme\nrules:\n  - name: a\n    type: anomaly\n    signal: p99\n    method: seasonal\n    period: 2d\n",
            "rules/pay.yaml:3: rule a: period: \"2d\" is not 1d or 1w",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(&error(text), expected, "{text}");
    }
}

#[test]
fn rule_names_are_unique_over_files() {
    let rule = "tenant: acme\nrules:\n  - name: a\n    type: absence\n    for: 1m\n";
    let files = vec![
        (PathBuf::from("one.yaml"), rule.to_owned()),
        (PathBuf::from("two.yaml"), format!("\n{rule}")),
    ];
    let error = parse(&files, &env, None).expect_err("refused").to_string();
    assert_eq!(error, "two.yaml:4: rule a: the name is taken by one.yaml:3");
}

#[test]
fn a_rule_file_that_is_not_in_the_folder_is_named() {
    let error = load(&[PathBuf::from("/nonexistent/rules.yaml")], None)
        .expect_err("refused")
        .to_string();
    assert!(error.starts_with("/nonexistent/rules.yaml: "), "{error}");
}

const PROMETHEUS: &str = r#"groups:
  - name: payments
    interval: 30s
    rules:
      - alert: PayErrors
        expr: sum by (vigil_unit) (rate(vigil_span_errors_total{service="pay"}[1m])) > 1
        for: 30s
        keep_firing_for: 1m
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.vigil_unit }} fails {{ $value | humanize }}/s"
      - alert: PayErrors
        expr: sum by (vigil_unit) (rate(vigil_span_errors_total{service="pay"}[1m])) > 0.1
        labels: {severity: ticket}
  - name: probes
    limit: 10
    rules:
      - alert: ProbeDown
        expr: 1
"#;

fn prometheus(text: &str) -> Result<Ruleset, String> {
    let files = vec![(PathBuf::from("prom/pay.yml"), text.to_owned())];
    let tenant = TenantId::parse("acme").expect("tenant");
    parse(&files, &env, Some(&tenant)).map_err(|e| e.to_string())
}

#[test]
fn prometheus_rule_files_load_as_rules_of_the_tenant_given() {
    let set = prometheus(PROMETHEUS).expect("loads");
    let summary: Vec<(&str, u64, u64, &str)> = set
        .rules
        .iter()
        .map(|r| {
            let Check::Promql(expression) = &r.check else {
                panic!("{} is not a PromQL rule", r.name)
            };
            (
                r.name.as_str(),
                r.for_s,
                r.keep_firing_for_s,
                expression.text.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "PayErrors",
                30,
                60,
                r#"sum by (vigil_unit) (rate(vigil_span_errors_total{service="pay"}[1m])) > 1"#
            ),
            (
                "PayErrors",
                0,
                0,
                r#"sum by (vigil_unit) (rate(vigil_span_errors_total{service="pay"}[1m])) > 0.1"#
            ),
            ("ProbeDown", 0, 0, "1"),
        ]
    );
    let first = &set.rules[0];
    assert_eq!(first.tenant.as_str(), "acme");
    assert_eq!(
        first.labels.get("severity").map(String::as_str),
        Some("page")
    );
    assert_eq!(
        first.annotations["summary"],
        Template::parse("{{vigil_unit}} fails {{value}}/s").expect("template")
    );
    // The 1m range read back on a restart, and the 5 min lookback of an
    // instant selector.
    assert_eq!(first.range_s(), 60);
    let Check::Promql(probe) = &set.rules[2].check else {
        panic!("a PromQL rule")
    };
    assert_eq!(probe.limit, 10);
}

#[test]
fn prometheus_rule_files_are_refused_as_promtool_refuses_them() {
    let cases = [
        (
            "groups:
  - name: a
    rules: []
  - name: a
    rules: []
",
            "prom/pay.yml:4: groupname: \"a\" is repeated in the same file",
        ),
        (
            "groups:
  - rules: []
",
            "prom/pay.yml:1: group 0: Groupname must not be empty",
        ),
        (
            "groups:
  - name: g
    rules:
      - alert: A
        expr: rate(x[5m]
",
            "prom/pay.yml:4: group \"g\", rule 1, \"A\": could not parse expression: ",
        ),
        (
            "groups:
  - name: g
    rules:
      - alert: A
        record: b
        expr: up
",
            "prom/pay.yml:4: group \"g\", rule 1, \"A\": only one of 'record' and 'alert' must be set",
        ),
        (
            "groups:
  - name: g
    rules:
      - expr: up
",
            "prom/pay.yml:2: group \"g\", rule 1, \"\": one of 'record' or 'alert' must be set",
        ),
        (
            "groups:
  - name: g
    rules:
      - alert: A
",
            "prom/pay.yml:4: group \"g\", rule 1, \"A\": field 'expr' must be set in rule",
        ),
        (
            "groups:
  - name: g
    rules:
      - alert: A
        expr: up
        labels: {1x: a}
",
            "prom/pay.yml:4: group \"g\", rule 1, \"A\": invalid label name: 1x",
        ),
        (
            "groups:
  - name: g
    rules:
      - alert: A
        expr: up
        annotations: {a-b: x}
",
            "prom/pay.yml:4: group \"g\", rule 1, \"A\": invalid annotation name: a-b",
        ),
        (
            "groups:
  - name: g
    rules:
      - alert: A
        expr: up
        for: 1.5m
",
            "prom/pay.yml:4: groups[0].rules[0]: not a valid duration string: \"1.5m\"",
        ),
        (
            "groups:
  - name: g
    rules:
      - alert: A
        expr: up
        severity: page
",
            "prom/pay.yml:6: groups[0].rules[0]: unknown field `severity`",
        ),
        // Beyond promtool: what Vigil does not do, said so.
        (
            "groups:
  - name: g
    rules:
      - record: job:up
        expr: up
",
            "prom/pay.yml:4: group \"g\", rule 1, \"job:up\": recording rules are not evaluated by Vigil",
        ),
        (
            "groups:
  - name: g
    rules:
      - alert: A
        expr: max_over_time(rate(x[1m])[5m:1m])
",
            "prom/pay.yml:4: group \"g\", rule 1, \"A\": Vigil's PromQL does not support subqueries",
        ),
        (
            "groups:
  - name: g
    rules:
      - alert: A
        expr: up
        annotations: {s: '{{ if $value }}x{{ end }}'}
",
            "prom/pay.yml:4: group \"g\", rule 1, \"A\": annotations.s: ",
        ),
    ];
    for (text, expected) in cases {
        let error = prometheus(text).expect_err(text);
        assert!(
            error.starts_with(expected),
            "{text}\n{error}\nnot {expected}"
        );
    }
    // Without a tenant to evaluate them on.
    let files = vec![(PathBuf::from("p.yml"), PROMETHEUS.to_owned())];
    let error = parse(&files, &env, None).expect_err("refused").to_string();
    assert_eq!(
        error,
        "p.yml:5: a Prometheus rule file names no tenant: set alerter.prometheus_tenant"
    );
    // An alert may not take the name of one of Vigil's rules.
    let tenant = TenantId::parse("acme").expect("tenant");
    let files = vec![
        (
            PathBuf::from("vigil.yaml"),
            "tenant: acme\nrules:\n  - name: PayErrors\n    type: absence\n    for: 1m\n"
                .to_owned(),
        ),
        (PathBuf::from("p.yml"), PROMETHEUS.to_owned()),
    ];
    let error = parse(&files, &env, Some(&tenant))
        .expect_err("refused")
        .to_string();
    assert_eq!(
        error,
        "p.yml:5: alert PayErrors: the name is taken by the rule of vigil.yaml:3"
    );
}

mod fuzz {
    //! Rule files as they could arrive: the good file above with bytes
    //! flipped, cut, inserted and repeated (see `vigil_testing::fuzz`), and
    //! label filters likewise. Property: no panic, a refusal names a line
    //! of the file, and what loads has the rules it names.

    use proptest::prelude::*;
    use vigil_domain::signal::parse_filter;
    use vigil_testing::fuzz::{config, mutations};

    use super::*;

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn fuzz_rule_files(bytes in mutations(vec![GOOD.as_bytes().to_vec()])) {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            // YAML breaks lines at `\n`, `\r` and `\r\n`; an error at the
            // end of the text is on the line after the last.
            let lines = 2 + text.matches(['\n', '\r']).count();
            let files = vec![(PathBuf::from("rules/pay.yaml"), text.clone())];
            match parse(&files, &env, None) {
                Ok(ruleset) => {
                    for rule in &ruleset.rules {
                        prop_assert!(text.contains(&rule.name), "{}", rule.name);
                    }
                }
                Err(FileError::Invalid { line, .. }) => prop_assert!(line <= lines, "line {line}"),
                Err(_) => {}
            }
        }

        #[test]
        fn fuzz_prometheus_rule_files(bytes in mutations(vec![PROMETHEUS.as_bytes().to_vec()])) {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let lines = 2 + text.matches(['\n', '\r']).count();
            let tenant = TenantId::parse("acme").expect("tenant");
            let files = vec![(PathBuf::from("prom/pay.yml"), text.clone())];
            match parse(&files, &env, Some(&tenant)) {
                Ok(ruleset) => {
                    for rule in &ruleset.rules {
                        prop_assert!(text.contains(&rule.name), "{}", rule.name);
                    }
                }
                Err(FileError::Invalid { line, .. }) => prop_assert!(line <= lines, "line {line}"),
                Err(_) => {}
            }
        }

        #[test]
        fn fuzz_filters(bytes in mutations(vec![
            br#"span.kind="server", vigil.unit=~"u[12]", status!="ok""#.to_vec(),
        ])) {
            let _ = parse_filter(&String::from_utf8_lossy(&bytes));
        }
    }
}

const PLAYBOOK: &str = r#"
playbooks:
  - name: drain
    rules: [pay-latency]
    if: ['located.vigil.unit!=""']
    steps:
      - call: rollback
      - wait: 10s
      - check:
          service: payments
          signal: p99
          window: 30s
          op: '<'
          value: 250
          where: {vigil.unit: "{{located.vigil.unit}}"}
          for: 20s
          deadline: 2m
      - approve: oncall
        timeout: 30m
      - escalate: oncall
        if: ['check="failed"']
"#;

#[test]
fn playbooks_load_with_their_checks_as_rules() {
    let files = vec![(PathBuf::from("rules/pay.yaml"), format!("{GOOD}{PLAYBOOK}"))];
    let set = parse(&files, &env, None).unwrap();
    let playbook = &set.playbooks[0];
    assert_eq!((playbook.name.as_str(), playbook.line), ("drain", 49));
    let kinds: Vec<&str> = playbook.steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["call", "wait", "check", "approve", "escalate"]);
    let StepKind::Check(check) = &playbook.steps[2].kind else {
        panic!("a check")
    };
    assert_eq!(
        (check.rule.as_str(), check.for_s, check.deadline_s),
        ("drain#2", 20, 120)
    );
    // The check is a threshold rule grouped by the keys of its `where`,
    // evaluated after the rules and making no alerts of its own.
    assert_eq!(set.checks.len(), 1);
    assert_eq!(set.checks[0].name, "drain#2");
    assert_eq!(set.checks[0].group_by, ["vigil.unit"]);
    assert_eq!(set.engine_rules().len(), set.rules.len() + 1);
    // Calls go only to the hosts listed.
    assert!(set.clone().check_hosts(&["127.0.0.1".into()]).is_ok());
    assert_eq!(
        set.check_hosts(&["deployer".into()])
            .unwrap_err()
            .to_string(),
        "rules/pay.yaml:49: playbook drain: steps[0]: call rollback: the host 127.0.0.1:9 \
         is not in alerter.playbook_hosts"
    );
}

#[test]
fn bad_playbooks_name_the_file_line_and_reason() {
    let refused = |replace: &str, with: &str| {
        let text = format!("{GOOD}{}", PLAYBOOK.replace(replace, with));
        error(&text)
    };
    let at = "rules/pay.yaml:49: playbook drain: ";
    for (replace, with, reason) in [
        (
            "call: rollback",
            "call: reboot",
            "steps[0]: call: no action is named \"reboot\"",
        ),
        (
            "rules: [pay-latency]",
            "rules: [pay-speed]",
            "rules: no rule is named \"pay-speed\"",
        ),
        (
            "approve: oncall",
            "approve: nobody",
            "steps[3]: no receiver is named \"nobody\"",
        ),
        (
            "      - wait: 10s\n",
            "      - wait: 10s\n        call: rollback\n",
            "steps[1]: one of call, wait, check, approve or escalate, and only one",
        ),
        (
            "deadline: 2m",
            "deadline: 10s",
            "steps[2]: check: deadline (10 s) must be longer than for (20 s)",
        ),
        ("signal: p99", "signal: p42", "steps[2]: check: signal"),
        (
            "where:",
            "group_by: [vigil.unit]\n          where:",
            "steps[2]: check: group_by is not a key of a check",
        ),
    ] {
        let refused = refused(replace, with);
        assert!(refused.starts_with(&format!("{at}{reason}")), "{refused}");
    }
    let no_check = format!("{GOOD}{}", PLAYBOOK.split("      - check:").next().unwrap());
    assert_eq!(
        error(&no_check),
        format!("{at}steps: a playbook needs a check, or no run could tell whether it recovered")
    );
}
