//! The config loader on arbitrary text. Every environment variable resolves to "x",
//! so the fuzzer reaches validation past credential lookup; only `Ok` or a list of
//! errors is acceptable, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |_: &str| Some("x".to_string());
    if let Err(errors) = leadscore::config::load_str(text, "fuzz.toml", &env) {
        // Rendering the errors (file:line:col, carets) must not panic either.
        let _ = errors.to_string();
    }
});
