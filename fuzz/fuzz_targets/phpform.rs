//! The PHP bracket-key form decoder both webhook parsers sit on: deep or huge keys,
//! bad percent escapes and invalid UTF-8 must be errors, not panics; and the token scan
//! (`phpform::find`, run before authentication) must agree with the tree about every
//! top-level value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = phpform::find(data, "auth[application_token]");
    if let Ok(tree) = phpform::parse_bytes(data) {
        // Walking the result must be as safe as building it.
        let _ = format!("{tree:?}");
        for (key, value) in &tree {
            if let Some(text) = value.as_text() {
                assert_eq!(
                    phpform::find(data, key).ok().flatten().as_deref(),
                    Some(text),
                    "find and parse disagree about {key:?}"
                );
            }
        }
    }
});
