//! `fasttoml::parse`, the fast path in front of the `toml` crate, agrees
//! with `toml` on every document it accepts (src/fasttoml.rs promises it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pam_twofactor::fasttoml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(fast) = fasttoml::parse(text) else {
        return;
    };
    let slow = match toml::from_str::<toml::Table>(text) {
        Ok(table) => table,
        Err(e) => panic!("fasttoml accepted what toml refuses ({e}):\n{text}\nfast: {fast}"),
    };
    let slow = serde_json::to_value(&slow).unwrap_or_else(|e| panic!("toml to JSON: {e}"));
    assert_eq!(fast, slow, "fasttoml and toml disagree on\n{text}");
});
