//! `SecretRecord::parse` and `State::parse_file` on the same arbitrary
//! bytes: never panic, whatever parses is within the size limits and
//! survives a write and a read (a state with its generation).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pam_twofactor::records::{SecretRecord, State};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = SecretRecord::parse(data) {
        let text = record
            .to_toml()
            .unwrap_or_else(|e| panic!("a parsed secret record cannot be written: {e}"));
        match SecretRecord::parse(text.as_bytes()) {
            Ok(again) => assert_eq!(again, record, "secret round trip:\n{}", text.as_str()),
            Err(e) => panic!(
                "a parsed secret record written back is refused: {e}\n{}",
                text.as_str()
            ),
        }
        assert!(!record.devices.is_empty() && record.devices.len() <= 16);
        assert!(record.backup.hashes.len() <= 100);
    }
    if let Ok(file) = State::parse_file(data) {
        let state = &file.state;
        let text = state
            .to_file(file.generation)
            .unwrap_or_else(|e| panic!("a parsed state cannot be written: {e}"));
        match State::parse_file(text.as_bytes()) {
            Ok(again) => assert_eq!(again, file, "state round trip:\n{text}"),
            Err(e) => panic!("a parsed state written back is refused: {e}\n{text}"),
        }
        assert!(state.used_backup_codes.len() <= 1000);
        assert!(state.last_accepted_step.len() <= 16);
    }
});
