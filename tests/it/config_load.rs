//! Config loading: a valid file loads with every credential resolved; a broken file
//! reports every mistake at its exact line; secrets never leak into Debug, errors or
//! the summary.

use std::collections::HashMap;
use std::path::Path;

use leadscore::config::{
    load, load_str, load_str_with, summary, Config, ConfigErrors, Portal, Secrets,
};
use leadscore::crm::{amocrm, bitrix24};
use secrecy::ExposeSecret;

const FIXTURES: &str = "tests/fixtures/config";

fn env_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn no_env(_: &str) -> Option<String> {
    None
}

const B24_URL: &str = "https://example.bitrix24.ru/rest/1/b24-webhook-CODE-5a9e/";
const AMO_CLIENT_SECRET: &str = "amo-client-secret-FIXTURE-0d17";
const AMO_WEBHOOK_SECRET: &str = "amo-webhook-secret-FIXTURE-c4b8";
const B24_APP_TOKEN: &str = "b24-app-token-FIXTURE-7f3a";
const AMO_REFRESH: &str = "amo-refresh-FIXTURE-91c2";

fn valid_env() -> impl Fn(&str) -> Option<String> {
    env_from(&[
        ("TEST_B24_WEBHOOK_URL", B24_URL),
        ("TEST_AMO_CLIENT_SECRET", AMO_CLIENT_SECRET),
        ("TEST_AMO_WEBHOOK_SECRET", AMO_WEBHOOK_SECRET),
    ])
}

/// A Bitrix24 portal's own settings (credentials, webhook checks).
fn b24_of(p: &Portal) -> &bitrix24::settings::Settings {
    p.settings_of().expect("a Bitrix24 portal")
}

/// An amoCRM portal's own settings (credentials, webhook checks).
fn amo_of(p: &Portal) -> &amocrm::settings::Settings {
    p.settings_of().expect("an amoCRM portal")
}

fn load_valid() -> Config {
    let label = format!("{FIXTURES}/valid.toml");
    let text = std::fs::read_to_string(&label).unwrap();
    match load_str(&text, &label, &valid_env()) {
        Ok(c) => c,
        Err(e) => panic!("valid.toml should load:\n{e}"),
    }
}

/// `FILE:LINE:COL: KEY` of each error, the part the tests pin down exactly.
fn heads(errors: &ConfigErrors) -> Vec<String> {
    errors
        .iter()
        .map(|e| format!("{}:{}:{}: {}", e.file, e.line, e.column, e.key_path))
        .collect()
}

/// A minimal scoring model that compiles; tests append portals and servers to it.
const SCORING: &str = r#"
[scoring]
[[scoring.groups]]
id = "fit"
[[scoring.rules]]
id = "ceo"
group = "fit"
label = "CEO"
points = 15
when = { field = "position", contains = "ceo" }
[[scoring.tiers]]
id = "cold"
min = 0
max = 70
[[scoring.tiers]]
id = "hot"
min = 71
max = 100
"#;

const B24_PORTAL: &str = r#"
[[portal]]
id = "p"
crm = "bitrix24"
webhook_url_env = "URL"
application_token_env = "TOKEN"
[portal.fields]
score = "UF_S"
tier = "UF_T"
"#;

fn b24_env() -> impl Fn(&str) -> Option<String> {
    env_from(&[("URL", B24_URL), ("TOKEN", B24_APP_TOKEN)])
}

fn errors_of(text: &str, env: &dyn Fn(&str) -> Option<String>) -> ConfigErrors {
    match load_str(text, "t.toml", env) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e,
    }
}

fn ok(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Config {
    match load_str(text, "t.toml", env) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

#[test]
fn valid_config_loads_with_credentials_resolved() {
    let c = load_valid();
    assert_eq!(c.server.listen, "127.0.0.1:0");
    assert_eq!(c.server.workers, 2);
    // A relative data_dir resolves against the config file's directory.
    assert_eq!(c.server.data_dir, Path::new(FIXTURES).join("state"));
    assert_eq!(c.portals.len(), 2);

    let b24 = &c.portals[0];
    assert_eq!(b24.id, "b24-main");
    match &b24_of(b24).auth {
        bitrix24::settings::Auth::Webhook { url } => assert_eq!(url.expose_secret(), B24_URL),
        _ => panic!(
            "expected a Bitrix24 webhook, got {}",
            b24.settings.auth_label()
        ),
    }
    // From a file: exactly one trailing newline is trimmed.
    assert_eq!(
        b24_of(b24).webhook.secret.as_ref().unwrap().expose_secret(),
        B24_APP_TOKEN
    );
    assert_eq!(
        b24_of(b24).webhook.domain.as_deref(),
        Some("example.bitrix24.ru")
    );
    // plan = "enterprise" → 5 requests/s, burst 250.
    assert_eq!(b24.rate_limit.per_second, 5.0);
    assert_eq!(b24.rate_limit.burst, 250);
    // Portal task overrides win over scoring.triggers.
    assert_eq!((b24.threshold, b24.rearm_below), (75, 65));

    let amo = &c.portals[1];
    match &amo_of(amo).auth {
        amocrm::settings::Auth::OAuth {
            base_url,
            client_id,
            client_secret,
            redirect_uri,
            refresh_token,
        } => {
            assert_eq!(base_url, "https://example.amocrm.ru");
            assert_eq!(client_id, "5f1c-client");
            assert_eq!(client_secret.expose_secret(), AMO_CLIENT_SECRET);
            assert_eq!(redirect_uri, "https://leadscore.example.ru/oauth/amocrm");
            // The file ends in "\r\n": both characters of the one line ending go.
            assert_eq!(refresh_token.expose_secret(), AMO_REFRESH);
        }
        _ => panic!("expected amoCRM OAuth, got {}", amo.settings.auth_label()),
    }
    assert_eq!(
        amo_of(amo).webhook.secret.as_ref().unwrap().expose_secret(),
        AMO_WEBHOOK_SECRET
    );
    assert_eq!((amo.rate_limit.per_second, amo.rate_limit.burst), (5.0, 5));
    assert_eq!((amo.threshold, amo.rearm_below), (70, 60));
    assert_eq!(c.scoring.rules.len(), 3);
}

#[test]
fn load_reads_a_file_and_resolves_relative_paths_against_it() {
    // `load` takes the process environment; use a file that needs no variables.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("creds")).unwrap();
    std::fs::write(dir.path().join("creds/url"), format!("{B24_URL}\n")).unwrap();
    std::fs::write(dir.path().join("creds/token"), "tok\n\n").unwrap();
    let text = format!(
        "[[portal]]\nid = \"p\"\ncrm = \"bitrix24\"\nwebhook_url_file = \"creds/url\"\napplication_token_file = \"creds/token\"\n[portal.fields]\nscore = \"S\"\ntier = \"T\"\n{SCORING}"
    );
    let path = dir.path().join("leadscore.toml");
    std::fs::write(&path, text).unwrap();
    let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
    match &b24_of(&c.portals[0]).auth {
        bitrix24::settings::Auth::Webhook { url } => assert_eq!(url.expose_secret(), B24_URL),
        _ => panic!("unexpected {}", c.portals[0].settings.auth_label()),
    }
    // Only one trailing newline is trimmed: the second is part of the value.
    assert_eq!(
        b24_of(&c.portals[0])
            .webhook
            .secret
            .as_ref()
            .unwrap()
            .expose_secret(),
        "tok\n"
    );
    assert_eq!(c.path, path);
}

#[test]
fn load_of_a_missing_file_is_one_error() {
    let errors = load(Path::new("/nonexistent/leadscore.toml")).unwrap_err();
    assert_eq!(
        heads(&errors),
        vec!["/nonexistent/leadscore.toml:1:1: (file)"]
    );
    assert!(errors.to_string().contains("cannot read the config file"));
}

#[test]
fn example_config_passes() {
    let path = "config/leadscore.example.toml";
    let text = std::fs::read_to_string(path).expect("the example config exists");
    let env = env_from(&[
        ("LEADSCORE_B24_WEBHOOK_URL", B24_URL),
        ("LEADSCORE_B24_APP_TOKEN", B24_APP_TOKEN),
        ("LEADSCORE_AMO_TOKEN", "amo-long-lived"),
        ("LEADSCORE_AMO_WEBHOOK_SECRET", AMO_WEBHOOK_SECRET),
        ("LEADSCORE_DASHBOARD_TOKEN", "dash"),
    ]);
    if let Err(e) = load_str(&text, path, &env) {
        panic!("the example config must pass `leadscore check`:\n{e}");
    }
}

#[test]
fn optional_secrets_let_explain_use_a_config_without_the_daemons_environment() {
    let path = "config/leadscore.example.toml";
    let text = std::fs::read_to_string(path).expect("the example config exists");
    // Strict: the unset variables are errors.
    let errors = load_str(&text, path, &no_env).unwrap_err();
    assert!(errors
        .iter()
        .all(|e| e.message.starts_with("environment variable")));
    // Optional: they are warnings, and the credentials are left empty.
    let c =
        load_str_with(&text, path, &no_env, Secrets::Optional).unwrap_or_else(|e| panic!("{e}"));
    let unresolved: Vec<&str> = c
        .warnings
        .iter()
        .filter(|w| w.message.contains("is not set"))
        .map(|w| w.key_path.as_str())
        .collect();
    assert_eq!(unresolved.len(), errors.len());
    assert!(!c.portals.is_empty());

    // Still an error in Optional mode: a mistake that is not about availability.
    let text = format!("{B24_PORTAL}{SCORING}").replace("score = \"UF_S\"\n", "");
    let errors = load_str_with(&text, "t.toml", &no_env, Secrets::Optional).unwrap_err();
    assert_eq!(heads(&errors), vec!["t.toml:7:1: portal[0].fields.score"]);
}

#[test]
fn broken_config_reports_every_error_at_its_line() {
    let label = format!("{FIXTURES}/broken.toml");
    let text = std::fs::read_to_string(&label).unwrap();
    let env = env_from(&[
        ("B24_APP_TOKEN", "x"),
        ("AMO_TOKEN", "y"),
        ("B24_URL", B24_URL),
    ]);
    let errors = load_str(&text, &label, &env).unwrap_err();
    let all = heads(&errors);
    let f = &label;
    // Every error of config loading itself, exactly, in file order.
    let own: Vec<String> = all
        .iter()
        .filter(|h| !h.contains(": scoring."))
        .cloned()
        .collect();
    let expected: Vec<String> = [
        "3:1: server.listen",
        "4:1: server.workers",
        "8:1: servr",
        "12:1: portal[0].id",
        "14:1: portal[0].webhook_url_env",
        "16:1: portal[0].application_token_env",
        "17:1: portal[0].access_token_env",
        "18:1: portal[0].plan",
        "19:16: portal[0].rate_limit.per_second",
        "19:34: portal[0].rate_limit.burst",
        "25:1: portal[0].fields.tier_values",
        "27:1: portal[0].fields.tier_values.warm",
        "28:1: portal[0].fields.tier_values.lukewarm",
        "31:1: portal[0].task.threshold",
        "33:1: portal[1].webhook_secret",
        "36:1: portal[1].base_url",
        "37:1: portal[1].access_token_file",
        "38:1: portal[1].plan",
        "40:1: portal[1].fields.score",
        "40:1: portal[1].fields.tier",
        "43:1: portal[2].base_url",
        "43:1: portal[2]",
        "43:1: portal[2].webhook_secret",
        "44:1: portal[2].id",
        "51:1: portal[3].aplication_token_env",
        "55:7: portal[4].crm",
    ]
    .iter()
    .map(|s| format!("{f}:{s}"))
    .collect();
    assert_eq!(own, expected, "all errors:\n{errors}");

    // The scoring engine's findings, mapped onto the file.
    for want in [
        "68:30: scoring.rules[0].when.regex",
        "71:1: scoring.rules[1].id",
        "72:1: scoring.rules[1].group",
    ] {
        let want = format!("{f}:{want}");
        assert!(all.contains(&want), "missing {want} in:\n{errors}");
    }

    // Messages that matter, by key.
    let msg = |key: &str| {
        errors
            .iter()
            .find(|e| e.key_path == key)
            .map(|e| e.message.clone())
            .unwrap_or_default()
    };
    assert!(msg("portal[0].webhook_url_env").contains("`B24_NOT_SET` is not set"));
    assert!(msg("portal[2].id").contains("duplicate portal id `dup`"));
    assert!(msg("portal[2].id").contains("line 34"));
    assert!(msg("portal[3].aplication_token_env").contains("did you mean `application_token_env`"));
    assert!(msg("portal[1].plan").contains("only to bitrix24"));
    // The inline secret next to a mistake is not repeated anywhere.
    assert!(!errors.to_string().contains("inline-app-token-SECRET-1"));
    // Display: one `FILE:LINE:COL: KEY: message` per line.
    let shown = errors.to_string();
    assert_eq!(shown.lines().count(), errors.len());
    assert!(shown.lines().next().unwrap().starts_with(&format!(
        "{f}:3:1: server.listen: `localhost` is not a socket address"
    )));
}

#[test]
fn scoring_errors_carry_line_and_key() {
    let text = r#"
[scoring]
[[scoring.groups]]
id = "fit"
[[scoring.rules]]
id = "a"
group = "fit"
label = "A"
points = 1
when = { field = "position", regex = "[" }
[[scoring.rules]]
id = "a"
group = "nope"
label = "A2"
points = 1
when = { field = "position", contains = "x" }
[[scoring.tiers]]
id = "all"
min = 0
max = 100
"#;
    let errors = errors_of(text, &no_env);
    let all = heads(&errors);
    for want in [
        "t.toml:10:30: scoring.rules[0].when.regex",
        "t.toml:12:1: scoring.rules[1].id",
        "t.toml:13:1: scoring.rules[1].group",
    ] {
        assert!(
            all.contains(&want.to_string()),
            "missing {want} in:\n{errors}"
        );
    }
}

#[test]
fn unset_environment_variable_is_named() {
    let text = format!("{B24_PORTAL}{SCORING}");
    let env = env_from(&[("TOKEN", B24_APP_TOKEN)]);
    let errors = errors_of(&text, &env);
    assert_eq!(
        heads(&errors),
        vec!["t.toml:5:1: portal[0].webhook_url_env"]
    );
    assert_eq!(errors.0[0].message, "environment variable `URL` is not set");
    let env = env_from(&[("TOKEN", B24_APP_TOKEN), ("URL", "")]);
    let errors = errors_of(&text, &env);
    assert_eq!(errors.0[0].message, "environment variable `URL` is empty");
}

#[test]
fn file_credentials_report_unreadable_and_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let text = format!(
        "[[portal]]\nid = \"p\"\ncrm = \"bitrix24\"\nwebhook_url_file = \"missing\"\napplication_token_file = \"empty\"\n[portal.fields]\nscore = \"S\"\ntier = \"T\"\n{SCORING}"
    );
    let label = dir.path().join("c.toml").display().to_string();
    let errors = load_str(&text, &label, &no_env).unwrap_err();
    assert_eq!(
        heads(&errors),
        vec![
            format!("{label}:4:1: portal[0].webhook_url_file"),
            format!("{label}:5:1: portal[0].application_token_file"),
        ]
    );
    assert!(errors.0[0].message.starts_with("cannot read `"));
    assert!(errors.0[0].message.contains("missing"));
    assert!(errors.0[1].message.ends_with("is empty"));
}

#[cfg(unix)]
#[test]
fn world_readable_secret_file_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for (name, value, mode) in [("url", B24_URL, 0o600), ("token", "tok", 0o644)] {
        let p = dir.path().join(name);
        std::fs::write(&p, value).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let text = format!(
        "[[portal]]\nid = \"p\"\ncrm = \"bitrix24\"\nwebhook_url_file = \"url\"\napplication_token_file = \"token\"\n[portal.fields]\nscore = \"S\"\ntier = \"T\"\n{SCORING}"
    );
    let label = dir.path().join("c.toml").display().to_string();
    let c = load_str(&text, &label, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<&str> = c.warnings.iter().map(|w| w.key_path.as_str()).collect();
    assert_eq!(keys, vec!["portal[0].application_token_file"]);
}

#[test]
fn secrets_never_appear_in_debug_summary_or_errors() {
    let c = load_valid();
    let debug = format!("{c:?}");
    let shown = summary(&c);
    for secret in [
        B24_URL,
        "b24-webhook-CODE-5a9e",
        B24_APP_TOKEN,
        AMO_CLIENT_SECRET,
        AMO_REFRESH,
        AMO_WEBHOOK_SECRET,
    ] {
        assert!(!debug.contains(secret), "Debug shows {secret}");
        assert!(!shown.contains(secret), "summary shows {secret}");
    }
    assert!(debug.contains("REDACTED"));

    // A malformed webhook URL is reported without its value.
    let text = format!(
        "[[portal]]\nid = \"p\"\ncrm = \"bitrix24\"\nwebhook_url = \"https://x.bitrix24.ru/not-rest/HUSH-1\"\napplication_token = \"HUSH-2\"\n[portal.fields]\nscore = \"S\"\ntier = \"T\"\n{SCORING}"
    );
    let errors = errors_of(&text, &no_env);
    assert_eq!(heads(&errors), vec!["t.toml:4:1: portal[0].webhook_url"]);
    // A secret of the wrong type is reported without its value either.
    let text = format!(
        "[[portal]]\nid = \"p\"\ncrm = \"amocrm\"\nbase_url = \"https://a.amocrm.ru\"\naccess_token = 98765432123\nwebhook_secret = \"HUSH-3\"\n{SCORING}"
    );
    let errors2 = errors_of(&text, &no_env);
    assert_eq!(heads(&errors2), vec!["t.toml:5:16: portal[0].access_token"]);
    let text_all = format!("{errors}\n{errors2}\n{errors:?}\n{errors2:?}");
    for secret in ["HUSH-1", "HUSH-2", "HUSH-3", "98765432123"] {
        assert!(
            !text_all.contains(secret),
            "an error shows {secret}:\n{text_all}"
        );
    }
}

#[test]
fn a_secret_pasted_where_a_name_or_path_belongs_is_not_echoed() {
    let text = format!(
        "[[portal]]\nid = \"p\"\ncrm = \"bitrix24\"\nwebhook_url_file = \"https://x.bitrix24.ru/rest/1/HUSHCODE4/\"\napplication_token_env = \"jvh9y1ulvt2m6k5or90v9mg8nn32ozas\"\n[portal.fields]\nscore = \"S\"\ntier = \"T\"\n{SCORING}"
    );
    let errors = errors_of(&text, &no_env);
    assert_eq!(
        heads(&errors),
        vec![
            "t.toml:4:1: portal[0].webhook_url_file",
            "t.toml:5:1: portal[0].application_token_env"
        ]
    );
    let shown = format!("{errors}\n{errors:?}");
    assert!(!shown.contains("HUSHCODE4"), "{shown}");
    assert!(
        !shown.contains("jvh9y1ulvt2m6k5or90v9mg8nn32ozas"),
        "{shown}"
    );
}

#[test]
fn portal_must_be_an_array_of_tables_and_none_is_a_warning() {
    let text = format!("[portal]\nid = \"p\"\ncrm = \"bitrix24\"\n{SCORING}");
    let errors = errors_of(&text, &no_env);
    assert_eq!(heads(&errors), vec!["t.toml:1:1: portal"]);

    let c = ok(SCORING, &no_env);
    assert!(c.portals.is_empty());
    let keys: Vec<&str> = c.warnings.iter().map(|w| w.key_path.as_str()).collect();
    assert_eq!(keys, vec!["portal"]);
}

#[test]
fn syntax_error_points_at_its_line() {
    let text = "[server]\nworkers = 4\nlisten = \"127.0.0.1:80\nqueue_limit = 5\n";
    let errors = errors_of(text, &no_env);
    assert!(!errors.is_empty());
    assert_eq!(errors.0[0].line, 3, "{errors}");
    assert_eq!(errors.0[0].key_path, "syntax");

    let text = format!("{SCORING}\n[server]\nworkers = = 4\n");
    let errors = errors_of(&text, &no_env);
    let line = SCORING.lines().count() + 3;
    assert_eq!(errors.0[0].line, line, "{errors}");
}

#[test]
fn type_errors_in_separate_sections_are_all_reported() {
    let text = format!(
        "[server]\nworkers = \"four\"\n{B24_PORTAL}[portal.task]\nthreshold = \"high\"\n{SCORING}[[scoring.rules]]\nid = \"x\"\ngroup = \"fit\"\nlabel = \"X\"\npoints = \"ten\"\n"
    );
    let errors = errors_of(&text, &b24_env());
    let keys: Vec<&str> = errors.iter().map(|e| e.key_path.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "server.workers",
            "portal[0].task.threshold",
            "scoring.rules[1].points"
        ],
        "{errors}"
    );
}

#[test]
fn credential_forms_and_crm_requirements() {
    // Two forms of one credential.
    let text = format!(
        "[[portal]]\nid = \"p\"\ncrm = \"bitrix24\"\nwebhook_url_env = \"URL\"\nwebhook_url_file = \"/dev/null\"\napplication_token_env = \"TOKEN\"\n[portal.fields]\nscore = \"S\"\ntier = \"T\"\n{SCORING}"
    );
    let errors = errors_of(&text, &b24_env());
    assert_eq!(
        heads(&errors),
        vec!["t.toml:5:1: portal[0].webhook_url_file"]
    );

    // Bitrix24 with neither webhook nor OAuth, and no application token.
    let text = format!("[[portal]]\nid = \"p\"\ncrm = \"bitrix24\"\n{SCORING}");
    let errors = errors_of(&text, &no_env);
    assert_eq!(
        heads(&errors),
        vec![
            "t.toml:1:1: portal[0]",
            "t.toml:1:1: portal[0].application_token"
        ]
    );

    // A half-configured Bitrix24 OAuth app names each missing key.
    let text = format!(
        "[[portal]]\nid = \"p\"\ncrm = \"bitrix24\"\nbase_url = \"https://x.bitrix24.ru\"\nclient_id = \"app.1\"\napplication_token_env = \"TOKEN\"\n[portal.fields]\nscore = \"S\"\ntier = \"T\"\n{SCORING}"
    );
    let errors = errors_of(&text, &b24_env());
    assert_eq!(
        heads(&errors),
        vec![
            "t.toml:1:1: portal[0].client_secret",
            "t.toml:1:1: portal[0].refresh_token"
        ]
    );

    // Webhook and OAuth keys together.
    let text = format!(
        "[[portal]]\nid = \"p\"\ncrm = \"bitrix24\"\nwebhook_url_env = \"URL\"\nclient_id = \"app.1\"\napplication_token_env = \"TOKEN\"\n[portal.fields]\nscore = \"S\"\ntier = \"T\"\n{SCORING}"
    );
    let errors = errors_of(&text, &b24_env());
    assert_eq!(heads(&errors), vec!["t.toml:5:1: portal[0].client_id"]);

    // amoCRM: a long-lived token mixed with OAuth keys; webhook_url is Bitrix24's.
    let text = format!(
        "[[portal]]\nid = \"a\"\ncrm = \"amocrm\"\nbase_url = \"https://a.amocrm.ru\"\naccess_token_env = \"T\"\nrefresh_token_env = \"R\"\nwebhook_secret_env = \"S\"\nwebhook_url = \"https://x/rest/1/y/\"\n{SCORING}"
    );
    let env = env_from(&[("T", "t"), ("R", "r"), ("S", "s")]);
    let errors = errors_of(&text, &env);
    assert_eq!(
        heads(&errors),
        vec![
            "t.toml:6:1: portal[0].refresh_token_env",
            "t.toml:8:1: portal[0].webhook_url"
        ]
    );

    // amoCRM with a long-lived token is complete; the default pacing is 7/s burst 7.
    let text = format!(
        "[[portal]]\nid = \"a\"\ncrm = \"amocrm\"\nbase_url = \"https://a.amocrm.ru\"\naccess_token_env = \"T\"\nwebhook_secret_env = \"S\"\n[portal.fields]\nscore = \"1\"\ntier = \"2\"\n{SCORING}"
    );
    let c = ok(&text, &env);
    assert!(matches!(
        amo_of(&c.portals[0]).auth,
        amocrm::settings::Auth::LongLived { .. }
    ));
    assert_eq!(
        (
            c.portals[0].rate_limit.per_second,
            c.portals[0].rate_limit.burst
        ),
        (7.0, 7)
    );
}

#[test]
fn bitrix24_default_pacing_is_the_standard_plan() {
    let c = ok(&format!("{B24_PORTAL}{SCORING}"), &b24_env());
    let rl = c.portals[0].rate_limit;
    assert_eq!((rl.per_second, rl.burst), (2.0, 50));
}

#[test]
fn env_overrides_server_settings_after_the_file() {
    let text = format!("[server]\nlisten = \"127.0.0.1:8088\"\nworkers = 4\n{SCORING}");
    let env = env_from(&[
        ("LEADSCORE_LISTEN", "0.0.0.0:9000"),
        ("LEADSCORE_DATA_DIR", "/srv/leadscore"),
        ("LEADSCORE_WORKERS", "8"),
    ]);
    let c = ok(&text, &env);
    assert_eq!(c.server.listen, "0.0.0.0:9000");
    assert_eq!(c.server.data_dir, Path::new("/srv/leadscore"));
    assert_eq!(c.server.workers, 8);
    assert_eq!(
        c.env_overrides,
        vec![
            "LEADSCORE_LISTEN",
            "LEADSCORE_DATA_DIR",
            "LEADSCORE_WORKERS"
        ]
    );
    assert!(summary(&c).contains("from env: LEADSCORE_LISTEN"));

    // Bad override values are errors at the key they override.
    let env = env_from(&[
        ("LEADSCORE_LISTEN", "nowhere"),
        ("LEADSCORE_WORKERS", "many"),
    ]);
    let errors = errors_of(&text, &env);
    assert_eq!(
        heads(&errors),
        vec!["t.toml:2:1: server.listen", "t.toml:3:1: server.workers"]
    );
    assert!(errors.0[0].message.contains("LEADSCORE_LISTEN"));
    assert!(errors.0[1].message.contains("LEADSCORE_WORKERS"));

    // Without a [server] table the defaults apply and overrides still work.
    let c = ok(SCORING, &env_from(&[("LEADSCORE_WORKERS", "3")]));
    assert_eq!(c.server.workers, 3);
    assert_eq!(c.server.listen, "127.0.0.1:8088");
}

#[test]
fn risky_settings_are_warnings() {
    let text = format!(
        "[server]\ncoalesce_ms = 600000\nsweep_interval_secs = 60\n[[portal]]\nid = \"p\"\ncrm = \"bitrix24\"\nwebhook_url_env = \"URL\"\napplication_token = \"{B24_APP_TOKEN}\"\nrate_limit = {{ per_second = 10.0, burst = 50 }}\n[portal.fields]\nscore = \"S\"\ntier = \"T\"\n[portal.task]\nthreshold = 98\n{SCORING}"
    );
    let c = ok(&text, &b24_env());
    let keys: Vec<String> = c
        .warnings
        .iter()
        .map(|w| format!("{}:{}", w.line, w.key_path))
        .collect();
    assert_eq!(
        keys,
        vec![
            "2:server.coalesce_ms",
            "8:portal[0].application_token",
            "9:portal[0].rate_limit.per_second",
            "14:portal[0].task.threshold",
        ]
    );
    let all: String = c.warnings.iter().map(|w| format!("{w}\n")).collect();
    assert!(!all.contains(B24_APP_TOKEN));
    assert!(all.contains("application_token_env"));
    // The summary lists the warnings too.
    assert!(summary(&c).contains("warnings 4"));
}

#[test]
fn thresholds_must_be_reachable_and_rearm_below_them() {
    let text = format!(
        "{B24_PORTAL}[portal.task]\nthreshold = 100\n[[portal]]\nid = \"q\"\ncrm = \"bitrix24\"\nwebhook_url_env = \"URL\"\napplication_token_env = \"TOKEN\"\n[portal.fields]\nscore = \"S\"\ntier = \"T\"\n[portal.task]\nthreshold = 40\nrearm_below = 50\n{SCORING}"
    );
    let errors = errors_of(&text, &b24_env());
    assert_eq!(
        heads(&errors),
        vec![
            "t.toml:11:1: portal[0].task.threshold",
            "t.toml:22:1: portal[1].task.rearm_below"
        ]
    );
    assert!(errors.0[0].message.contains("no tier reaches it"));
}

#[test]
fn fields_are_required_when_writing_back_and_map_names_are_checked() {
    let text = format!(
        "[[portal]]\nid = \"p\"\ncrm = \"bitrix24\"\nwebhook_url_env = \"URL\"\napplication_token_env = \"TOKEN\"\n[portal.fields]\nbreakdown = \"UF_WHY\"\n[portal.fields.map]\nindustri = \"UF_I\"\n\"custom.budget\" = \"UF_B\"\n{SCORING}"
    );
    let errors = errors_of(&text, &b24_env());
    assert_eq!(
        heads(&errors),
        vec![
            "t.toml:6:1: portal[0].fields.score",
            "t.toml:6:1: portal[0].fields.tier",
            "t.toml:9:1: portal[0].fields.map.industri",
        ]
    );

    // A portal that writes nothing back is valid but warned about.
    let text = format!(
        "[[portal]]\nid = \"p\"\ncrm = \"bitrix24\"\nwebhook_url_env = \"URL\"\napplication_token_env = \"TOKEN\"\n{SCORING}"
    );
    let c = ok(&text, &b24_env());
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].key_path, "portal[0]");
    assert!(summary(&c).contains("writes nothing back"));
}

#[test]
fn missing_scoring_section_is_an_error() {
    let errors = errors_of("[server]\nworkers = 1\n", &no_env);
    assert_eq!(heads(&errors), vec!["t.toml:1:1: scoring"]);
}

#[test]
fn summary_fits_one_screen_and_names_the_essentials() {
    let c = load_valid();
    let s = summary(&c);
    assert!(s.lines().count() <= 25, "{s}");
    for needle in [
        "b24-main",
        "bitrix24",
        "inbound webhook",
        "5/s burst 250",
        "amo_1",
        "OAuth2 app https://example.amocrm.ru",
        "score=UF_CRM_LEADSCORE",
        "fit",
        "max 60",
        "ceo, free_mail",
        "cold 0..30 · warm 31..70 · hot 71..100",
        "above 70 (re-arm below 60)",
        "above 75 (re-arm below 65)",
    ] {
        assert!(s.contains(needle), "summary lacks {needle:?}:\n{s}");
    }
}

#[test]
fn activity_map_mistakes_name_line_and_key_and_good_entries_classify() {
    let bad = format!(
        "{B24_PORTAL}\
[[portal.activity_map]]
kind = \"demo_request\"
subjet = \"демо\"

[[portal.activity_map]]
kind = \"download\"
subject = \"(?i)скачан (прайс\"
{SCORING}"
    );
    let errors = errors_of(&bad, &b24_env());
    assert_eq!(
        heads(&errors),
        vec![
            "t.toml:12:1: portal[0].activity_map[0].subjet",
            "t.toml:16:1: portal[0].activity_map[1].subject",
        ]
    );
    assert!(
        errors.0[0].message.contains("`subject`"),
        "{}",
        errors.0[0].message
    );
    assert!(errors.0[1].message.contains("regular expression"));
    // amoCRM's attributes are its own: `type_id` is a Bitrix24 one.
    let amo = bad
        .replace("crm = \"bitrix24\"", "crm = \"amocrm\"")
        .replace("subjet", "type_id");
    let keys: Vec<String> = errors_of(&amo, &b24_env())
        .iter()
        .map(|e| e.key_path.clone())
        .collect();
    assert!(
        keys.contains(&"portal[0].activity_map[0].type_id".to_string()),
        "{keys:?}"
    );

    let good = bad.replace("subjet", "subject").replace("(прайс", "прайс");
    let config = ok(&good, &b24_env());
    let map = &config.portals[0].fields.activity_map;
    let m = map
        .classify(|a| (a == "subject").then_some("Скачан прайс-лист"))
        .unwrap();
    assert_eq!(m.entry, 2);
}

/// `explain --crm-activities` classifies a portal's own rows with its activity map,
/// scores them, and says which entry classified each one.
#[test]
fn explain_shows_which_activity_map_entry_classified_each_row() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args([
            "explain",
            "--config",
            "config/leadscore.example.toml",
            "--lead",
            "config/samples/hot-ceo.lead.json",
            "--portal",
            "main",
            "--crm-activities",
            "config/samples/bitrix24.crm-activities.json",
            "--now",
            "2026-11-30T12:00:00Z",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no line for {id} in:\n{text}"))
            .to_string()
    };
    assert!(line("501").contains("demo_request") && line("501").contains("entry #1"));
    assert!(line("502").contains("download") && line("502").contains("entry #2"));
    assert!(line("503").contains("page_view") && line("503").contains("built-in"));
    assert!(line("504").contains("call") && line("504").contains("built-in"));
    assert!(text.contains("demo_request"), "{text}");
}

#[test]
fn bitrix24_outcome_mapping_has_defaults_and_is_checked() {
    let c = ok(&format!("{B24_PORTAL}{SCORING}"), &b24_env());
    let m = &b24_of(&c.portals[0]).outcomes;
    assert_eq!(m, &bitrix24::settings::OutcomeMap::default());
    assert_eq!(
        (m.won_stages.clone(), m.lost_stages.clone()),
        (vec!["S".to_string()], vec!["F".to_string()])
    );
    let custom = B24_PORTAL.replace(
        "application_token_env = \"TOKEN\"",
        "application_token_env = \"TOKEN\"\nwon_stages = [\"C1:WON\", \"S\"]\nlost_lead_statuses = [\"JUNK\"]",
    );
    let c = ok(&format!("{custom}{SCORING}"), &b24_env());
    let m = &b24_of(&c.portals[0]).outcomes;
    assert_eq!(m.won_stages, ["C1:WON", "S"]);
    assert_eq!(m.lost_lead_statuses, ["JUNK"]);
    let broken = B24_PORTAL.replace(
        "application_token_env = \"TOKEN\"",
        "application_token_env = \"TOKEN\"\nwon_stages = []\nlost_stages = [\"S\"]",
    );
    let text = errors_of(&format!("{broken}{SCORING}"), &b24_env()).to_string();
    assert!(
        text.contains("won_stages: must list at least one"),
        "{text}"
    );
    assert!(text.contains("`S` is also in `won_stages`"), "{text}");
}

#[test]
fn bitrix24_entities_default_to_leads_and_mistakes_name_their_line() {
    let c = ok(&format!("{B24_PORTAL}{SCORING}"), &b24_env());
    let e = b24_of(&c.portals[0]).entities;
    assert_eq!((e.lead, e.deal), (true, false));
    for (line, want) in [
        ("entities = [\"deal\"]", (false, true)),
        ("entities = [\"lead\", \"deal\"]", (true, true)),
        ("entities = [\"lead\"]", (true, false)),
    ] {
        let text = B24_PORTAL.replace(
            "application_token_env = \"TOKEN\"",
            &format!("application_token_env = \"TOKEN\"\n{line}"),
        );
        let c = ok(&format!("{text}{SCORING}"), &b24_env());
        let e = b24_of(&c.portals[0]).entities;
        assert_eq!((e.lead, e.deal), want, "{line}");
    }
    for (line, says) in [
        ("entities = [\"contact\"]", "unknown entity `contact`"),
        ("entities = []", "must name at least one"),
        ("entities = [\"deal\", \"deal\"]", "`deal` is listed twice"),
    ] {
        let text = format!(
            "{}{SCORING}",
            B24_PORTAL.replace(
                "application_token_env = \"TOKEN\"",
                &format!("application_token_env = \"TOKEN\"\n{line}"),
            )
        );
        let errors = errors_of(&text, &b24_env());
        let e = errors
            .iter()
            .find(|e| e.key_path.ends_with("entities"))
            .unwrap_or_else(|| panic!("no entities error for {line}: {errors}"));
        assert!(e.message.contains(says), "{line}: {}", e.message);
        let expected_line = text.lines().position(|l| l == line).unwrap() + 1;
        assert_eq!(e.line, expected_line, "{line}");
    }
}

#[test]
fn stage_coefficients_load_and_an_open_stage_at_one_is_refused_at_its_line() {
    let good = format!(
        "{B24_PORTAL}[portal.stages.pipelines.\"0\"]\nNEW = 0.0\nPREPARATION = 0.1\nWON = 1.0\n{SCORING}"
    );
    let c = ok(&good, &b24_env());
    assert_eq!(
        c.portals[0].stages.coefficient(Some("0"), "PREPARATION"),
        Some(0.1)
    );
    let bad = format!(
        "{B24_PORTAL}[portal.stages.pipelines.\"0\"]\nNEW = 0.0\nEXECUTING = 1.0\n{SCORING}"
    );
    let errors = errors_of(&bad, &b24_env());
    let e = errors
        .iter()
        .find(|e| e.key_path.ends_with("EXECUTING"))
        .unwrap_or_else(|| panic!("{errors}"));
    assert!(e.message.contains("only a won stage"), "{}", e.message);
    let line = bad.lines().position(|l| l == "EXECUTING = 1.0").unwrap() + 1;
    assert_eq!(e.line, line);
}

#[test]
fn tracking_mistakes_name_line_and_key_and_a_good_section_loads() {
    let bad = format!(
        "{B24_PORTAL}\
[portal.tracking]
site_key = \"k\"
allowed_origins = [\"https://shop.example.ru/path\"]
identify_secret_env = \"TRACK\"
{SCORING}"
    );
    let env = env_from(&[
        ("URL", B24_URL),
        ("TOKEN", B24_APP_TOKEN),
        ("TRACK", "s3cr3tZ"),
    ]);
    let errors = errors_of(&bad, &env);
    let mut keys: Vec<String> = errors.iter().map(|e| e.key_path.clone()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "portal[0].tracking.allowed_origins[0]",
            "portal[0].tracking.identify_secret",
            "portal[0].tracking.site_key",
        ]
    );
    assert!(errors.0.iter().all(|e| e.file == "t.toml" && e.line > 0));
    assert!(
        !errors.to_string().contains("s3cr3tZ"),
        "the secret is never shown"
    );

    let good = bad
        .replace("site_key = \"k\"", "site_key = \"site-key-1234\"")
        .replace("/path\"", "\"");
    let env = env_from(&[
        ("URL", B24_URL),
        ("TOKEN", B24_APP_TOKEN),
        ("TRACK", "0123456789abcdef0123456789abcdef"),
    ]);
    let c = ok(&good, &env);
    let t = c.portals[0].tracking.as_ref().expect("tracking on");
    assert!(t.allows_origin("https://SHOP.example.ru/"));
    assert!(!t.allows_origin("https://shop.example.ru.evil.com"));
    assert_eq!(t.anonymous_days, 30);
    assert_eq!(
        t.resolution_days, 30,
        "e-mail / phone resolutions kept 30 days"
    );
    let week = good.replace(
        "identify_secret_env = \"TRACK\"",
        "identify_secret_env = \"TRACK\"\nresolution_days = 7",
    );
    let c = ok(&week, &env);
    assert_eq!(c.portals[0].tracking.as_ref().unwrap().resolution_days, 7);

    // The CRM-recorded visitor id must be a mapped field.
    let unmapped = good.replace(
        "identify_secret_env = \"TRACK\"",
        "identify_secret_env = \"TRACK\"\nvisitor_field = \"custom.ls_visitor\"",
    );
    let errors = errors_of(&unmapped, &env);
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].key_path, "portal[0].tracking.visitor_field");
    assert!(errors.to_string().contains("is not mapped"), "{errors}");
}

#[test]
fn amocrm_outcome_mapping_has_defaults_and_is_checked() {
    let portal = |extra: &str| {
        format!(
            "[[portal]]\nid = \"a\"\ncrm = \"amocrm\"\nbase_url = \"https://a.amocrm.ru\"\naccess_token_env = \"T\"\nwebhook_secret_env = \"S\"\n{extra}\n[portal.fields]\nscore = \"1\"\ntier = \"2\"\n{SCORING}"
        )
    };
    let env = env_from(&[
        ("T", "amo-token-FIXTURE-55aa"),
        ("S", "amo-secret-FIXTURE-66bb"),
    ]);
    let c = ok(&portal(""), &env);
    let m = &amo_of(&c.portals[0]).outcomes;
    assert_eq!(m, &amocrm::settings::OutcomeMap::default());
    assert_eq!(
        (m.won_statuses.clone(), m.lost_statuses.clone()),
        (vec![142], vec![143])
    );
    let c = ok(
        &portal("won_statuses = [142]\nlost_statuses = [143, 31000009]"),
        &env,
    );
    assert_eq!(
        amo_of(&c.portals[0]).outcomes.lost_statuses,
        [143, 31_000_009]
    );
    let text = errors_of(&portal("won_statuses = []\nlost_statuses = [143]"), &env).to_string();
    assert!(
        text.contains("won_statuses: must list at least one"),
        "{text}"
    );
    let text = errors_of(&portal("won_statuses = [142, 143]"), &env).to_string();
    assert!(text.contains("143 is also in `won_statuses`"), "{text}");
}

#[test]
fn reminder_mistakes_name_line_and_key_and_a_good_section_loads() {
    let bad = format!(
        "{B24_PORTAL}\
[portal.reminder]
field = \"custom.purchase_month\"
days_before = 0
title = \" \"
{SCORING}"
    );
    let errors = errors_of(&bad, &b24_env());
    let mut keys: Vec<String> = errors.iter().map(|e| e.key_path.clone()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "portal[0].reminder.days_before",
            "portal[0].reminder.field",
            "portal[0].reminder.title",
        ]
    );
    assert!(errors.0.iter().all(|e| e.file == "t.toml" && e.line > 0));
    assert!(
        errors.to_string().contains("[portal.fields.map]"),
        "{errors}"
    );

    let good = format!(
        "{B24_PORTAL}\
[portal.fields.map]
\"custom.purchase_month\" = \"UF_CRM_PURCHASE_MONTH\"
[portal.reminder]
field = \"custom.purchase_month\"
{SCORING}"
    );
    let c = ok(&good, &b24_env());
    let r = c.portals[0].reminder.as_ref().expect("reminder on");
    assert_eq!((r.days_before, r.yearly), (30, true));
    assert!(r.title.contains("{date}"));
}

/// A BANT block with every kind of mistake, each reported at its line.
const BANT_BROKEN: &str = r#"[scoring.qualification]
formula = "BANT"
cap = 150
require = ["authority", "lpr"]
[[scoring.qualification.criteria]]
id = "budget"
when = { field = "custom.budget", range = { min = 1 } }
[[scoring.qualification.criteria]]
id = "authority"
when = { field = "position", contains = "директор" }
[[scoring.qualification.criteria]]
id = "need"
when = { field = "custom.need", exists = true }
[[scoring.qualification.criteria]]
id = "deadline"
when = { field = "custom.deadline", within_months = 3 }
"#;

#[test]
fn qualification_mistakes_carry_line_and_key() {
    // SCORING is 18 lines (it starts with a newline): the block starts on line 19.
    let text = format!("{SCORING}{BANT_BROKEN}");
    let errors = errors_of(&text, &no_env);
    let all = heads(&errors);
    for want in [
        "t.toml:21:1: scoring.qualification.cap",
        "t.toml:22:25: scoring.qualification.require[1]",
        "t.toml:33:1: scoring.qualification.criteria[3].id",
    ] {
        assert!(
            all.contains(&want.to_string()),
            "missing {want} in:\n{errors}"
        );
    }
    let text = errors.to_string();
    assert!(
        text.contains("cap 150 is outside the score's range 0..=100"),
        "{text}"
    );
    assert!(
        text.contains("unknown criterion 'deadline' for BANT (its criteria: budget, authority, need, timeframe)"),
        "{text}"
    );

    let bad_formula = format!("{SCORING}[scoring.qualification]\nformula = \"BANTS\"\n");
    let errors = errors_of(&bad_formula, &no_env);
    assert_eq!(
        heads(&errors),
        vec!["t.toml:20:1: scoring.qualification.formula"],
        "{errors}"
    );
    assert!(errors.to_string().contains("use BANT, ANUM, AM or custom"));
}

#[test]
fn a_valid_qualification_block_and_capacity_load() {
    let fixed = BANT_BROKEN
        .replace("cap = 150", "cap = 60")
        .replace("\"lpr\"", "\"money\"")
        .replace("id = \"deadline\"", "id = \"timeframe\"");
    let text = format!(
        "{SCORING}{fixed}{B24_PORTAL}[portal.task.capacity]\nper_rep_per_day = 5\nfallback_responsible = \"7\"\nutc_offset = \"+03:00\"\n"
    );
    let config = ok(&text, &b24_env());
    assert!(config.model.has_qualification());
    let cap = config.portals[0].task.capacity.as_ref().expect("capacity");
    assert_eq!(cap.per_rep_per_day, 5);
    assert_eq!(cap.fallback_responsible.as_deref(), Some("7"));
    assert_eq!(cap.offset().local_minus_utc(), 3 * 3600);
}

#[test]
fn capacity_mistakes_carry_line_and_key() {
    let text = format!(
        "{SCORING}{B24_PORTAL}[portal.task.capacity]\nper_rep_per_day = 0\nutc_offset = \"Moscow\"\nworking_days = [\"mon\", \"funday\"]\nholidays = [\"2027-13-01\"]\n"
    );
    let errors = errors_of(&text, &b24_env());
    let text = errors.to_string();
    let all = heads(&errors);
    assert!(
        all.iter()
            .any(|h| h.ends_with("task.capacity.per_rep_per_day")),
        "{text}"
    );
    assert!(
        all.iter().any(|h| h.ends_with("task.capacity.utc_offset")),
        "{text}"
    );
    assert!(text.contains("must look like \"+03:00\""), "{text}");
    for key in ["task.capacity.working_days", "task.capacity.holidays"] {
        assert!(all.iter().any(|h| h.ends_with(key)), "{key}: {text}");
    }
    assert!(text.contains("\"funday\" is not a weekday"), "{text}");
    assert!(text.contains("\"2027-13-01\" is not a date"), "{text}");
}
