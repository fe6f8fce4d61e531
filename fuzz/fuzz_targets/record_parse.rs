//! `SecretRecord::parse` and `State::parse` on the same arbitrary bytes:
//! never panic, whatever parses survives `parse(to_toml(x)) == x` (read by
//! the template for what we write, and again by `toml`), and the fast
//! readers agree with the `toml` crate: the same text with its basic
//! strings turned into literal ones (`"` → `'`, same meaning when there is
//! no `\` or `'`; outside the fast reader's subset, so read by `toml`)
//! parses to the same value. Likewise with the first key escaped
//! (`force_slow_path`), which works on documents without strings too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pam_twofactor::record::{SecretRecord, State};
use pam_twofactor_fuzz::force_slow_path;

/// The text with every `"` replaced by `'`, when that keeps its meaning.
fn literal_strings(data: &[u8]) -> Option<Vec<u8>> {
    (!data.contains(&b'\\') && !data.contains(&b'\'') && data.contains(&b'"')).then(|| {
        data.iter()
            .map(|&b| if b == b'"' { b'\'' } else { b })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let secret = SecretRecord::parse(data);
    if let Ok(record) = &secret {
        let text = record.to_toml();
        match SecretRecord::parse(text.as_bytes()) {
            Ok(again) => assert_eq!(again, *record, "secret round trip:\n{}", text.as_str()),
            Err(e) => panic!(
                "a parsed secret record written back is refused: {e}\n{}",
                text.as_str()
            ),
        }
        // What we write is read by its template; toml reads it the same.
        if let Some(slow) = force_slow_path(text.as_bytes()) {
            assert_eq!(
                SecretRecord::parse(&slow).as_ref(),
                Ok(record),
                "secret: template and toml disagree on\n{}",
                text.as_str()
            );
        }
        assert!(!record.devices.is_empty() && record.devices.len() <= 16);
        assert!(record.backup.hashes.len() <= 100);
    }
    let state = State::parse(data);
    if let Ok(state) = &state {
        let text = state.to_toml();
        match State::parse(text.as_bytes()) {
            Ok(again) => assert_eq!(again, *state, "state round trip:\n{text}"),
            Err(e) => panic!("a parsed state written back is refused: {e}\n{text}"),
        }
        if let Some(slow) = force_slow_path(text.as_bytes()) {
            assert_eq!(
                State::parse(&slow).as_ref(),
                Ok(state),
                "state: template and toml disagree on\n{text}"
            );
        }
        assert!(state.used_backup_codes.len() <= 1000);
        assert!(state.last_accepted_step.len() <= 16);
    }
    let slow_twins = [literal_strings(data), force_slow_path(data)];
    for slow in slow_twins.into_iter().flatten() {
        let text = String::from_utf8_lossy(data);
        assert_eq!(
            SecretRecord::parse(&slow).ok(),
            secret.as_ref().ok().cloned(),
            "secret: fast reader and toml disagree on\n{text}"
        );
        assert_eq!(
            State::parse(&slow).ok(),
            state.as_ref().ok().cloned(),
            "state: fast reader and toml disagree on\n{text}"
        );
    }
});
