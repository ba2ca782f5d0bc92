//! The PHP bracket-key form decoder both webhook parsers sit on: deep or huge keys,
//! bad percent escapes and invalid UTF-8 must be errors, not panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = phpform::parse_bytes(data) {
        // Walking the result must be as safe as building it.
        let _ = format!("{tree:?}");
    }
});
