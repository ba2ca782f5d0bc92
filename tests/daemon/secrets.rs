//! Secrets never reach the logs: a full `leadscore demo` at trace level, every line it
//! prints searched for the inbound-webhook code and the application token.

use std::process::Command;

use leadscore_bitrix24_sandbox::SandboxOptions;
use secrecy::ExposeSecret;

#[test]
fn a_trace_level_demo_run_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["--log-format", "json", "demo", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "trace")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.lines().count() > 1000,
        "trace logging was on ({} lines)",
        stderr.lines().count()
    );
    assert!(stdout.contains("call-now tasks"), "{stdout}");

    // The demo wrote its config (with the secrets) into the data dir: read them back.
    let config = std::fs::read_to_string(dir.path().join("demo.toml")).unwrap();
    let value_of = |key: &str| -> String {
        let line = config
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} in demo.toml"));
        line.split('"').nth(1).unwrap().to_string()
    };
    let token = value_of("application_token");
    let webhook_url = value_of("webhook_url");
    let code = SandboxOptions::default()
        .webhook_code
        .expose_secret()
        .to_string();
    assert!(webhook_url.contains(&code));
    for secret in [&token, &code] {
        assert!(secret.len() >= 16);
        for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            assert!(
                !text.contains(secret.as_str()),
                "a secret appeared in {name}: {}",
                text.lines().find(|l| l.contains(secret.as_str())).unwrap()
            );
        }
    }
}
