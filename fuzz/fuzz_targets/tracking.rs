//! The public tracking endpoint's parsers: whatever a browser (or anyone) posts to
//! `/track/<portal>` or `/identify/<portal>` must be an error or a batch within the
//! limits, never a panic; a parsed batch must keep every event inside its bounds.
#![no_main]

use chrono::{TimeZone, Utc};
use leadscore::tracking::{identify, payload};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

fuzz_target!(|data: &[u8]| {
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
    if let Ok(batch) = payload::parse(data, now) {
        assert!(!batch.events.is_empty() && batch.events.len() <= payload::MAX_EVENTS);
        for e in &batch.events {
            assert!(e.at <= now);
            assert!(e.url.as_ref().is_some_and(|u| u.len() <= payload::MAX_URL));
            assert!(e.title.as_ref().is_none_or(|t| t.chars().count() <= payload::MAX_TITLE));
        }
    }
    let _ = identify::parse_body(data);
    // Headers taken from the input itself: never a panic, and never a pass.
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (ts, sig, body) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
    let secret = SecretString::from("fuzz-secret-fuzz-secret-fuzz-sec");
    assert!(identify::verify(&secret, ts, sig, body.as_bytes(), now, 300).is_err());
});
