//! Any body a stranger can POST to the Bitrix24 webhook URL: the parser must return
//! `Ok` or `Err`, never panic, loop or blow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = leadscore_bitrix24::webhook::parse(data);
});
