//! `<user>.state`, written under the user's lock by the module and by
//! `twofactor unlock`: last accepted step per device, failures, lock,
//! rate-limit window, used backup codes, learned drift, grace hosts and
//! the code last delivered.
//!
//! A state file (format version 2) starts with a line `checksum = "…"`,
//! the SHA-256 of the rest, and carries a `generation` that every write
//! raises by one: the user's two state files (`user::UserFiles`) are told
//! apart by it after a crash, and a copy whose write was cut short by one
//! by its checksum. Version 1 files (neither) are read as generation 0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Invalid, MAX_DEVICES, MAX_DRIFT_STEPS, MAX_GRACE_HOSTS, RecordError, VERSION, from_toml, hex,
    to_toml, unhex, valid_host, valid_label,
};
use crate::otp::backup::HASH_BYTES;

/// Used backup-code hashes a state may remember.
const MAX_USED_BACKUP_CODES: usize = 1000;
/// Send times a state may remember (`[delivery] max_per_hour` is at most 100).
const MAX_DELIVERIES: usize = 100;
/// The state format this build writes (`VERSION`, 1, is still read).
pub const STATE_VERSION: u32 = 2;
/// How a version 2 state file begins: its checksum line.
const CHECKSUM_KEY: &[u8] = b"checksum = ";

/// A state file's contents: the state and the generation it was written as.
#[derive(Debug, PartialEq, Eq)]
pub struct StateFile {
    pub state: State,
    pub generation: u64,
}

/// A version 2 state file's first line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Head {
    checksum: String,
}

/// The mutable state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Per device label: the newest time step accepted (RFC 6238 §5.2).
    pub last_accepted_step: BTreeMap<String, u64>,
    /// Consecutive failures since the last success or unlock.
    pub failures: u32,
    /// Unix time until which every attempt is refused.
    pub locked_until: Option<u64>,
    /// Start of the current rate-limit window.
    pub rate_window_start: u64,
    /// Attempts (any outcome) in the current window.
    pub rate_window_attempts: u32,
    /// Hashes of consumed backup codes.
    pub used_backup_codes: Vec<[u8; HASH_BYTES]>,
    /// Per device label: learned clock offset in steps (device minus us).
    pub drift_steps: BTreeMap<String, i64>,
    /// Per remote host: time of the last success from it (`[grace]`).
    pub grace: BTreeMap<String, u64>,
    /// A code sent by `[delivery]`: its hash and expiry.
    pub delivered: Option<Delivered>,
    /// When codes were sent (for `max_per_hour`).
    pub deliveries: Vec<u64>,
    /// Unix time of the last accepted code (for `twofactor list`); absent
    /// in files written before it was recorded.
    pub last_success: Option<u64>,
}

/// A delivered code waiting to be typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub hash: [u8; HASH_BYTES],
    pub expires: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    #[serde(default)]
    failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locked_until: Option<u64>,
    #[serde(default)]
    rate_window_start: u64,
    #[serde(default)]
    rate_window_attempts: u32,
    #[serde(default)]
    used_backup_codes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivered_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivered_expires: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deliveries: Vec<u64>,
    #[serde(default)]
    last_accepted_step: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    drift_steps: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    grace: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_success: Option<u64>,
}

impl State {
    /// Parses and checks a state file.
    pub fn parse(bytes: &[u8]) -> Result<State, RecordError> {
        Ok(State::parse_file(bytes)?.state)
    }

    /// Parses and checks a state file, with its generation: a version 2
    /// file must match its checksum ([`RecordError::Torn`] if not) and
    /// have a generation; a version 1 file has neither (generation 0).
    pub fn parse_file(bytes: &[u8]) -> Result<StateFile, RecordError> {
        // NUL never appears in TOML; zeros are what a file extended by a
        // write that did not reach the disk reads as.
        if bytes.contains(&0) {
            return Err(RecordError::Torn);
        }
        if !bytes.starts_with(CHECKSUM_KEY) {
            let raw: RawState = from_toml(bytes)?;
            return match (raw.version, raw.generation) {
                (VERSION, None) => Ok(StateFile {
                    state: State::from_raw(raw)?,
                    generation: 0,
                }),
                (VERSION, Some(_)) => Err(Invalid::Generation.into()),
                (STATE_VERSION, _) => Err(Invalid::NoChecksum.into()),
                (other, _) => Err(RecordError::Version(other)),
            };
        }
        let line = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(RecordError::Torn)?;
        let (head, body) = bytes.split_at(line + 1);
        let head: Head = from_toml(head)?;
        let sum: [u8; 32] = Sha256::digest(body).into();
        if unhex::<32>(&head.checksum) != Some(sum) {
            return Err(RecordError::Torn);
        }
        let raw: RawState = from_toml(body)?;
        match (raw.version, raw.generation) {
            (STATE_VERSION, Some(generation)) => Ok(StateFile {
                state: State::from_raw(raw)?,
                generation,
            }),
            (STATE_VERSION | VERSION, _) => Err(Invalid::Generation.into()),
            (other, _) => Err(RecordError::Version(other)),
        }
    }

    /// The state's fields from a parsed file, checked.
    fn from_raw(raw: RawState) -> Result<State, RecordError> {
        for (field, len, max) in [
            (
                "used_backup_codes",
                raw.used_backup_codes.len(),
                MAX_USED_BACKUP_CODES,
            ),
            (
                "last_accepted_step",
                raw.last_accepted_step.len(),
                MAX_DEVICES,
            ),
            ("drift_steps", raw.drift_steps.len(), MAX_DEVICES),
            ("grace", raw.grace.len(), MAX_GRACE_HOSTS),
            ("deliveries", raw.deliveries.len(), MAX_DELIVERIES),
        ] {
            if len > max {
                return Err(Invalid::TooMany { field, max }.into());
            }
        }
        if let Some(label) = raw
            .last_accepted_step
            .keys()
            .chain(raw.drift_steps.keys())
            .find(|l| !valid_label(l))
        {
            return Err(Invalid::Label(label.clone()).into());
        }
        if let Some((label, &steps)) = raw
            .drift_steps
            .iter()
            .find(|(_, d)| d.unsigned_abs() > MAX_DRIFT_STEPS)
        {
            return Err(Invalid::Drift {
                label: label.clone(),
                steps,
            }
            .into());
        }
        let delivered = match (&raw.delivered_code, raw.delivered_expires) {
            (None, None) => None,
            (Some(h), Some(expires)) => Some(Delivered {
                hash: unhex::<HASH_BYTES>(h).ok_or(Invalid::DeliveredHash)?,
                expires,
            }),
            _ => return Err(Invalid::DeliveredPair.into()),
        };
        let used_backup_codes = raw
            .used_backup_codes
            .iter()
            .map(|h| unhex::<HASH_BYTES>(h))
            .collect::<Option<Vec<_>>>()
            .ok_or(Invalid::UsedBackupHash)?;
        Ok(State {
            last_accepted_step: raw.last_accepted_step,
            failures: raw.failures,
            locked_until: raw.locked_until,
            rate_window_start: raw.rate_window_start,
            rate_window_attempts: raw.rate_window_attempts,
            used_backup_codes,
            drift_steps: raw.drift_steps,
            // Hosts the module would not record (a quote, a space: a file
            // from before hosts were restricted, or edited by hand) are
            // dropped, not refused: they never came from a login, and
            // losing a grace entry only means that host's next login asks
            // for a code.
            grace: raw
                .grace
                .into_iter()
                .filter(|(h, _)| valid_host(h))
                .collect(),
            delivered,
            deliveries: raw.deliveries,
            last_success: raw.last_success,
        })
    }

    /// The text of the state file of `generation`: the checksum line,
    /// then the state.
    pub fn to_file(&self, generation: u64) -> Result<String, RecordError> {
        let body = to_toml(&RawState {
            version: STATE_VERSION,
            generation: Some(generation),
            failures: self.failures,
            locked_until: self.locked_until,
            rate_window_start: self.rate_window_start,
            rate_window_attempts: self.rate_window_attempts,
            used_backup_codes: self.used_backup_codes.iter().map(|h| hex(h)).collect(),
            delivered_code: self.delivered.as_ref().map(|d| hex(&d.hash)),
            delivered_expires: self.delivered.as_ref().map(|d| d.expires),
            deliveries: self.deliveries.clone(),
            last_accepted_step: self.last_accepted_step.clone(),
            drift_steps: self.drift_steps.clone(),
            grace: self.grace.clone(),
            last_success: self.last_success,
        })?;
        let sum = Sha256::digest(body.as_bytes());
        Ok(format!("checksum = \"{}\"\n{body}", hex(&sum)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state with every optional field set and entries in every table,
    /// dotted labels among them (written quoted).
    fn every_field_state() -> State {
        let mut state = State {
            failures: 2,
            locked_until: Some(5),
            rate_window_start: 1_907_755_200,
            rate_window_attempts: 3,
            used_backup_codes: vec![[1; HASH_BYTES], [2; HASH_BYTES]],
            delivered: Some(Delivered {
                hash: [3; HASH_BYTES],
                expires: 9,
            }),
            deliveries: vec![1, 2],
            last_success: Some(1_781_524_700),
            ..State::default()
        };
        state
            .last_accepted_step
            .insert("default".into(), 63_591_840);
        state.last_accepted_step.insert("work.phone".into(), 7);
        state.drift_steps.insert("phone-2".into(), -4);
        state.drift_steps.insert("a.b".into(), 1);
        state.drift_steps.insert("tablet".into(), 3);
        state.grace.insert("192.0.2.5".into(), 1_781_524_800);
        state.grace.insert("2001:db8::1".into(), 3);
        state
    }

    /// The state survives a write and read unchanged.
    #[test]
    fn state_round_trips() {
        let mut state = State {
            failures: 3,
            locked_until: Some(1_900_000_100),
            rate_window_start: 1_900_000_000,
            rate_window_attempts: 4,
            used_backup_codes: vec![[9; HASH_BYTES]],
            ..State::default()
        };
        state
            .last_accepted_step
            .insert("default".into(), 63_333_333);
        for (generation, state) in [State::default(), state, every_field_state()]
            .into_iter()
            .enumerate()
        {
            let generation = generation as u64 + 7;
            let text = state.to_file(generation).unwrap();
            assert!(text.starts_with("checksum = \""), "{text}");
            assert!(text.contains("\nversion = 2\ngeneration = "), "{text}");
            assert_eq!(
                State::parse_file(text.as_bytes()).unwrap(),
                StateFile { state, generation }
            );
        }
    }

    /// A version 2 file, byte for byte (its checksum from `sha256sum` of
    /// the lines after the first), reads as its state and generation; one
    /// changed byte anywhere, or zeros at its end, make it `Torn`.
    #[test]
    fn a_state_file_is_checked_against_its_checksum() {
        let body = "version = 2\ngeneration = 41\nfailures = 2\nrate_window_start = 0\nrate_window_attempts = 0\nused_backup_codes = []\n\n[last_accepted_step]\ndefault = 63591840\n";
        let text = format!(
            "checksum = \"2d0ab7948e0580a854550256dc213a6b8e51c111afb70f9324e9dc3bc40613c9\"\n{body}"
        );
        let mut want = State {
            failures: 2,
            ..State::default()
        };
        want.last_accepted_step.insert("default".into(), 63_591_840);
        assert_eq!(
            State::parse_file(text.as_bytes()).unwrap(),
            StateFile {
                state: want.clone(),
                generation: 41
            }
        );
        assert_eq!(want.to_file(41).unwrap(), text, "written the same way");
        let edited = text.replace("failures = 2", "failures = 0");
        assert_eq!(State::parse_file(edited.as_bytes()), Err(RecordError::Torn));
        let sum_edited = text.replacen("2d0a", "2d0b", 1);
        assert_eq!(
            State::parse_file(sum_edited.as_bytes()),
            Err(RecordError::Torn)
        );
        let cut = &text[..text.len() - 10];
        assert_eq!(State::parse_file(cut.as_bytes()), Err(RecordError::Torn));
        let zeros = [text.as_bytes(), &[0u8; 64]].concat();
        assert_eq!(State::parse_file(&zeros), Err(RecordError::Torn));
    }

    /// Version 1 files read as generation 0; a generation must come with
    /// version 2, and version 2 must have one and begin with its checksum.
    #[test]
    fn generations_and_checksums_belong_to_version_2() {
        assert_eq!(
            State::parse_file(b"version = 1\nfailures = 1\n")
                .unwrap()
                .generation,
            0
        );
        assert_eq!(
            State::parse_file(b"version = 1\ngeneration = 3\n"),
            Err(Invalid::Generation.into())
        );
        // Version 2 without its checksum line: the line was removed by hand.
        for text in ["version = 2\ngeneration = 3\n", "version = 2\n"] {
            assert_eq!(
                State::parse_file(text.as_bytes()),
                Err(Invalid::NoChecksum.into()),
                "{text}"
            );
        }
        // With its checksum line but no generation.
        let body = "version = 2\n";
        let text = format!(
            "checksum = \"{}\"\n{body}",
            super::super::hex(&Sha256::digest(body.as_bytes()))
        );
        assert_eq!(
            State::parse_file(text.as_bytes()),
            Err(Invalid::Generation.into())
        );
        assert_eq!(
            State::parse_file(b"version = 3\n"),
            Err(RecordError::Version(3))
        );
    }

    /// States as builds before serde wrote them (a hand writer), byte for
    /// byte, read to the same values.
    #[test]
    fn states_written_by_earlier_builds_read_the_same() {
        let fresh = "version = 1
failures = 0
rate_window_start = 0
rate_window_attempts = 0
used_backup_codes = []

[last_accepted_step]
";
        assert_eq!(State::parse(fresh.as_bytes()).unwrap(), State::default());
        let state = "version = 1
failures = 2
locked_until = 5
rate_window_start = 1907755200
rate_window_attempts = 3
used_backup_codes = [\"0101010101010101010101010101010101010101010101010101010101010101\", \"0202020202020202020202020202020202020202020202020202020202020202\"]
delivered_code = \"0303030303030303030303030303030303030303030303030303030303030303\"
delivered_expires = 9
deliveries = [1, 2]

[last_accepted_step]
default = 63591840
\"work.phone\" = 7

[drift_steps]
\"a.b\" = 1
phone-2 = -4
tablet = 3

[grace]
\"192.0.2.5\" = 1781524800
\"2001:db8::1\" = 3
";
        let earlier = State {
            last_success: None,
            ..every_field_state()
        };
        assert_eq!(State::parse(state.as_bytes()).unwrap(), earlier);
    }

    /// `last_success` is optional: a state without it (every earlier file)
    /// reads as `None`, and a set one is written and read back.
    #[test]
    fn last_success_is_optional_and_round_trips() {
        let old = State::parse(b"version = 1\nfailures = 1\n").unwrap();
        assert_eq!(old.last_success, None);
        assert!(!old.to_file(1).unwrap().contains("last_success"));
        let state = State {
            last_success: Some(1_781_524_800),
            ..State::default()
        };
        let text = state.to_file(1).unwrap();
        assert!(text.contains("\nlast_success = 1781524800\n"), "{text}");
        assert_eq!(State::parse(text.as_bytes()).unwrap(), state);
    }

    /// A label with a `.` or `-` (allowed: `add-device --label work.phone`)
    /// survives the state's per-device tables: bare, `work.phone = 5` would
    /// be a dotted key, a table, and the state written by the device's
    /// first login could not be read again (every later login of the user
    /// refused: "invalid type: map").
    #[test]
    fn dotted_labels_survive_a_write_and_read() {
        let labels = super::super::LABELS_TO_ROUND_TRIP;
        let mut state = State::default();
        for (i, label) in labels.iter().enumerate() {
            state
                .last_accepted_step
                .insert(label.to_string(), i as u64 + 1);
            state.drift_steps.insert(label.to_string(), -(i as i64) - 1);
        }
        let text = state.to_file(1).unwrap();
        assert!(text.contains("\n\"work.phone\" = 1\n"), "{text}");
        assert!(text.contains("\n\"work.phone\" = -1\n"), "{text}");
        assert!(text.contains("\nphone-2 = 2\n"), "{text}");
        assert_eq!(State::parse(text.as_bytes()).unwrap(), state);
    }

    /// Grace hosts the module would not record are dropped when read (the
    /// fuzzer's reproducers: hosts with a quote or a space).
    #[test]
    fn unrecordable_grace_hosts_are_dropped_on_read() {
        for text in [
            "version = 1\n[grace]\n\"a\\\"b\" = 5\n\"192.0.2.1\" = 7\n",
            "version = 1\n[grace]\n\"a\\\" = 1 #\" = 5\n\"192.0.2.1\" = 7\n",
            "version = 1\n[grace]\n\"a b\" = 5\n\"192.0.2.1\" = 7\n",
        ] {
            let state = State::parse(text.as_bytes()).unwrap();
            assert_eq!(
                state.grace.keys().collect::<Vec<_>>(),
                ["192.0.2.1"],
                "{text}"
            );
            let again = state.to_file(1).unwrap();
            assert_eq!(State::parse(again.as_bytes()).unwrap(), state);
        }
    }

    /// A state with a bad label, drift, hash or too many entries is refused
    /// with the variant that names the problem.
    #[test]
    fn bad_states_are_refused() {
        let hash = format!("\"{}\"", "ab".repeat(HASH_BYTES));
        let many_hosts: String = (0..=MAX_GRACE_HOSTS)
            .map(|i| format!("\"h{i}\" = 1\n"))
            .collect();
        let cases: [(String, Invalid); 8] = [
            (
                "[last_accepted_step]\n\"a b\" = 1\n".into(),
                Invalid::Label("a b".into()),
            ),
            (
                "[drift_steps]\nx = 1001\n".into(),
                Invalid::Drift {
                    label: "x".into(),
                    steps: 1001,
                },
            ),
            (
                "[drift_steps]\nx = -1001\n".into(),
                Invalid::Drift {
                    label: "x".into(),
                    steps: -1001,
                },
            ),
            (format!("delivered_code = {hash}\n"), Invalid::DeliveredPair),
            ("delivered_expires = 5\n".into(), Invalid::DeliveredPair),
            (
                "delivered_code = \"ab\"\ndelivered_expires = 5\n".into(),
                Invalid::DeliveredHash,
            ),
            (
                format!("used_backup_codes = [{hash}, \"ab\"]\n"),
                Invalid::UsedBackupHash,
            ),
            (
                format!("[grace]\n{many_hosts}"),
                Invalid::TooMany {
                    field: "grace",
                    max: MAX_GRACE_HOSTS,
                },
            ),
        ];
        for (body, want) in cases {
            let text = format!("version = 1\n{body}");
            assert_eq!(
                State::parse(text.as_bytes()),
                Err(RecordError::Invalid(want)),
                "{text}"
            );
        }
    }

    /// A state of the wrong shape (a negative count, an unknown field, no
    /// version) is refused; `version` alone is the empty state.
    #[test]
    fn states_of_the_wrong_shape_are_refused() {
        assert!(matches!(
            State::parse(b"version = 1\nfailures = -1"),
            Err(RecordError::Parse(_))
        ));
        assert!(matches!(
            State::parse(b"version = 1\nnope = 1"),
            Err(RecordError::Parse(_))
        ));
        assert!(matches!(
            State::parse(b"failures = 1"),
            Err(RecordError::Parse(_))
        ));
        assert_eq!(State::parse(b"version = 1").unwrap(), State::default());
    }
}
