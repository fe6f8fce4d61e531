//! Enrollment at first login (`unenrolled = "enroll"`).

use std::fmt::Write as _;

use zeroize::Zeroizing;

use super::input;
use super::{AuthError, Conversation, DenyReason, Method, Outcome, PROMPT, deny_after_prompt};
use crate::config::Config;
use crate::host::accounts;
use crate::host::clock::Clock;
use crate::otp::backup::{self, BackupCode};
use crate::otp::uri::{grouped_secret, otpauth_uri, qr_text};
use crate::otp::{self, CodeMatch, SecretKey, TotpParams};
use crate::records::user::UserFiles;
use crate::records::username::Username;
use crate::records::{DEFAULT_DEVICE, Device, SecretRecord, State};

/// `unenrolled = "enroll"`: show a new secret, ask for a code from it, and
/// store the enrollment only if the code is right. Trust on first use: the
/// password is all that protects this step (README says so plainly). The
/// code is checked at the time it is typed (scanning a QR code takes a
/// while), and every string that holds the secret or the backup codes is
/// wiped when dropped.
pub(super) fn enroll_at_login(
    config: &Config,
    files: &UserFiles,
    conv: &mut dyn Conversation,
    clock: &dyn Clock,
) -> Result<Outcome, AuthError> {
    let user = files.user();
    if !may_enroll(config, user) {
        return deny_after_prompt(conv, DenyReason::Unenrolled);
    }
    let secret = SecretKey::new(backup::random_bytes::<20>().ok_or(AuthError::Kdf)?.to_vec());
    let params = config.totp;
    show_new_secret(config, user, &secret, params, conv);
    let raw = conv.ask_code(PROMPT)?;
    let answer = input::classify(&raw);
    drop(raw);
    let now = clock.now();
    let step = match answer.totp() {
        Some(code) => match otp::match_code(&secret, params, code, now, config.window, None) {
            CodeMatch::Fresh(step) => step,
            _ => return Ok(Outcome::Deny(DenyReason::EnrollmentNotConfirmed)),
        },
        None => return Ok(Outcome::Deny(DenyReason::EnrollmentNotConfirmed)),
    };
    // Up to `count` argon2 hashes: in the host's argon2 slots like every
    // other hash a login runs, so password holders of unenrolled accounts
    // cannot start unbounded memory-hard work at once.
    let (backup, codes) = {
        let _slot = files.dir().lock_any(&super::answer::KDF_SLOTS)?;
        backup::new_backup_set(config.backup_codes, now).ok_or(AuthError::Kdf)?
    };
    let record = SecretRecord {
        created: now,
        devices: vec![Device {
            label: DEFAULT_DEVICE.into(),
            secret,
            params,
            created: now,
        }],
        backup,
        deliver_to: None,
    };
    {
        let _lock = files.lock()?;
        // Another login may have enrolled this user meanwhile: keep theirs.
        if files.read_record()?.is_some() {
            return Ok(Outcome::Deny(DenyReason::EnrollmentNotConfirmed));
        }
        let mut state = State::default();
        state.last_accepted_step.insert(DEFAULT_DEVICE.into(), step);
        files.reset_state(&state)?;
        files.write_record(&record)?;
    }
    super::notice::tell(
        config,
        files.user(),
        crate::delivery::Event::Enrolled,
        clock,
    );
    show_backup_codes(conv, &codes);
    Ok(Outcome::Allow(Method::Enrolled))
}

/// Whether `[enroll] groups` (host-local, also in fleet mode) lets `user`
/// enroll at login: empty means everyone.
pub(super) fn may_enroll(config: &Config, user: &Username) -> bool {
    config.enroll_groups.is_empty()
        || accounts::first_shared_group(user.as_str(), &config.enroll_groups).is_some()
}

/// Shows a new secret as a QR code and as a key with its parameters, then
/// asks nothing: the caller prompts for the code (also the fleet flow's
/// enrollment at login, with the fleet's parameters).
pub(super) fn show_new_secret(
    config: &Config,
    user: &Username,
    secret: &SecretKey,
    params: TotpParams,
    conv: &mut dyn Conversation,
) {
    // The whole message and the prompt fit an 80x24 console (issue 17): a
    // line above the code (short, for ssh's "(user@host) " prefix), at most
    // `uri::QR_MAX_ROWS` rows of code, the key with its parameters in two lines,
    // then the prompt. The otpauth URI is not shown here: it would wrap to
    // two more rows and says nothing the key and its parameters do not;
    // `twofactor enroll` prints it.
    let uri = Zeroizing::new(otpauth_uri(
        &config.issuer_name(),
        user.as_str(),
        secret,
        params,
    ));
    let qr = Zeroizing::new(qr_text(&uri).unwrap_or_default());
    let key = Zeroizing::new(grouped_secret(secret));
    // Sized up front so that writing never reallocates (a reallocation
    // would leave an unwiped copy behind).
    let mut message = Zeroizing::new(String::with_capacity(qr.len() + key.len() + 512));
    // Writing to a String cannot fail.
    let _ = write!(
        message,
        "Set up two-factor authentication: scan this QR code\n{}\n\
         Or enter this key by hand: {}\n\
         ({}, {} digits, every {} s) Then enter the code the app shows.",
        qr.as_str(),
        key.as_str(),
        params.algorithm,
        params.digits,
        params.period,
    );
    conv.show_info(&message);
    drop((message, qr, key, uri));
}

/// Shows the backup codes of a new enrollment, once.
pub(super) fn show_backup_codes(conv: &mut dyn Conversation, codes: &[BackupCode]) {
    let intro = "Two-factor authentication is set up. Your backup codes (each works once; keep them safe, they are not shown again):";
    let mut message = Zeroizing::new(String::with_capacity(intro.len() + codes.len() * 24));
    message.push_str(intro);
    for code in codes {
        message.push_str("\n  ");
        message.push_str(code.grouped().as_str());
    }
    conv.show_info(&message);
}
