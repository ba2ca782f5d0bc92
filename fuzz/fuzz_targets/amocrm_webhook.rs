//! Any body a stranger can POST to the amoCRM webhook URL (amoCRM hooks are unsigned,
//! so the parser sees the body before anything is authenticated).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = leadscore_amocrm::webhook::parse(data);
});
