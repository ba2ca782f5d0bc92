//! `leadscore check` on the behavioural trigger rules: a broken `high_intent`,
//! `buying_group` or `task` is reported at its file, line and key path.

use leadscore::config::load_str;

#[test]
fn trigger_rule_errors_carry_line_and_key() {
    let text = r#"
[scoring]
[[scoring.groups]]
id = "eng"
[[scoring.rules]]
id = "intent"
group = "eng"
label = "высокое намерение"
points = 20
high_intent = { kinds = ["demo_request"], subject = "(" }
[[scoring.rules]]
id = "group"
group = "eng"
label = "группа закупки"
points = 15
buying_group = { min_people = 1 }
task = " "
[[scoring.tiers]]
id = "all"
min = 0
max = 100
"#;
    let errors = match load_str(text, "t.toml", &|_: &str| None) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e,
    };
    let heads: Vec<String> = errors
        .iter()
        .map(|e| format!("{}:{}:{}: {}", e.file, e.line, e.column, e.key_path))
        .collect();
    for want in [
        "t.toml:10:43: scoring.rules[0].high_intent.subject",
        "t.toml:16:18: scoring.rules[1].buying_group.min_people",
        "t.toml:17:1: scoring.rules[1].task",
    ] {
        assert!(
            heads.contains(&want.to_string()),
            "missing {want} in:\n{errors}"
        );
    }
}
