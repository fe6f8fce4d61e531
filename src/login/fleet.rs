//! Fleet mode's login (`[fleet]`, docs/fleet.md): the same prompts,
//! messages and outcomes as the file flow, but every decision is the
//! database's, asked of the local agent one request per step; the files
//! of `state_dir` are not read. The host computes only what the database
//! cannot: argon2 hashes of answers (with the set's salt and parameters
//! from `Begin`), a new secret and backup set at a first-login enrollment,
//! and a code to send by message.
//!
//! Fail closed: an agent that cannot be asked, an `Unavailable` reply or a
//! reply that does not fit the request denies; only an allow verdict from
//! the agent lets anyone in.

use std::time::Instant;

use nix::errno::Errno;
use zeroize::Zeroizing;

use super::answer::{AnswerHash, KDF_SLOTS};
use super::by_message::SendFailure;
use super::input::{self, Answer};
use super::{
    AuthError, ConvError, Conversation, DEFAULT_PERIOD, DRIFT_INFO, DenyReason, FleetUnavailable,
    Method, NEXT_PROMPT, Outcome, PROMPT, SENT_PROMPT, SkipReason, deny_after_prompt, enroll,
    notice, record_changed, tell,
};
use crate::config::{Config, Fleet, Unenrolled};
use crate::delivery::{self, Event};
use crate::fleet::client::{self, ClientError};
use crate::fleet::protocol::{
    AttemptReply, AttemptRequest, AttemptVerdict, BackupKdf, BackupSetWire, BeginReply,
    DeliveryVerdict, DriftEcho, EnrollRequest, EnrollVerdict, Refusal, Reply, Request,
};
use crate::host::accounts;
use crate::host::clock::Clock;
use crate::otp::backup::{self, HASH_BYTES, KdfParams, SALT_BYTES};
use crate::otp::{self, Algorithm, SecretKey, TotpParams};
use crate::policy::{DriftCheck, Failure, Verdict};
use crate::records::username::Username;
use crate::records::{DEFAULT_DEVICE, hex, unhex};
use crate::store::{Dir, LockGuard, StoreError, TrustedDir};

/// Told when a first-login enrollment lost to another login's.
pub const ENROLLED_MEANWHILE: &str = "Your second factor was set up by another login while this prompt was open. Log in again with a code from that device.";

/// The most backup codes a fleet policy may ask a first login to make
/// (the config's `[backup_codes] count` range).
const MAX_BACKUP_CODES: u32 = 100;

/// How the flow ended before its last step.
enum Stop {
    /// Decided: denied (the agent unavailable, a reply not understood).
    Outcome(Outcome),
    /// A failure that is not the answer's (every one denies).
    Error(AuthError),
}

impl From<AuthError> for Stop {
    fn from(e: AuthError) -> Stop {
        Stop::Error(e)
    }
}

impl From<ConvError> for Stop {
    fn from(e: ConvError) -> Stop {
        Stop::Error(e.into())
    }
}

type Step<T> = Result<T, Stop>;

/// Authenticates `user` (already checked against the host-local
/// exemptions) through the agent of `fleet`.
pub(super) fn authenticate(
    config: &Config,
    fleet: &Fleet,
    user: Username,
    rhost: Option<&str>,
    conv: &mut dyn Conversation,
    clock: &dyn Clock,
) -> Result<Outcome, AuthError> {
    let mut login = Login {
        config,
        fleet,
        rhost,
        conv,
        clock,
    };
    match login.run(user) {
        Ok(outcome) | Err(Stop::Outcome(outcome)) => Ok(outcome),
        Err(Stop::Error(e)) => Err(e),
    }
}

/// One login in fleet mode.
struct Login<'a> {
    config: &'a Config,
    fleet: &'a Fleet,
    rhost: Option<&'a str>,
    conv: &'a mut dyn Conversation,
    clock: &'a dyn Clock,
}

/// What `Begin` said, checked: the user, the enrollment the prompt is
/// shown for, and what the host needs to hash an answer.
struct Begun {
    user: Username,
    reply: BeginReply,
    /// The set's argon2 salt and parameters.
    kdf: Kdf,
    /// The cheap look's refusal and when `Begin` answered (for how long it
    /// still holds: see [`Begun::refused_now`]).
    refusal: Option<Verdict>,
    answered: Instant,
}

impl Begun {
    /// The cheap look's refusal, if it still holds now: it lasts until
    /// `refusal_until` by the database's clock, which read `reply.now`
    /// when `Begin` answered; the time since is measured on this host's
    /// monotonic clock, so no host clock is compared with the database's.
    /// A hint only: the database decides again under the row lock.
    fn refused_now(&self) -> Option<Verdict> {
        let until = match self.refusal.as_ref()? {
            Verdict::LockedOut { until } | Verdict::RateLimited { until } => *until,
            _ => return None,
        };
        let elapsed = self.answered.elapsed().as_secs();
        let db_now = u64::try_from(self.reply.now)
            .unwrap_or(0)
            .saturating_add(elapsed);
        (db_now < until).then(|| self.refusal.clone()).flatten()
    }
}

/// A backup set's argon2 salt and parameters, checked.
struct Kdf {
    digits: u8,
    salt: [u8; SALT_BYTES],
    params: KdfParams,
}

impl Kdf {
    fn from_wire(wire: &BackupKdf) -> Result<Kdf, String> {
        // As the file store reads it: exactly SALT_BYTES of hex.
        let salt = unhex::<SALT_BYTES>(&wire.salt)
            .ok_or_else(|| format!("the backup salt is not {SALT_BYTES} bytes of hex"))?;
        let params = KdfParams {
            m_cost: wire.m_cost,
            t_cost: wire.t_cost,
            p_cost: wire.p_cost,
        };
        if !params.is_valid() {
            return Err(format!(
                "unusable argon2 parameters (m_cost {}, t_cost {}, p_cost {})",
                wire.m_cost, wire.t_cost, wire.p_cost
            ));
        }
        if !input::DIGITS.contains(&usize::from(wire.digits)) {
            return Err(format!("backup codes of {} digits", wire.digits));
        }
        Ok(Kdf {
            digits: wire.digits,
            salt,
            params,
        })
    }
}

/// A time from the agent (Unix seconds).
fn time(value: i64, what: &str) -> Result<u64, String> {
    u64::try_from(value).map_err(|_| format!("{what} {value} is before 1970"))
}

/// A field a reply must carry.
fn needed<T>(value: Option<T>, verdict: AttemptVerdict, field: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("{verdict:?} without {field}"))
}

/// The cheap look of `Begin` as the verdict the file flow's would give.
fn refusal_of(reply: &BeginReply) -> Result<Option<Verdict>, String> {
    let Some(refusal) = reply.refusal else {
        return Ok(None);
    };
    let until = reply
        .refusal_until
        .ok_or_else(|| format!("{refusal:?} without refusal_until"))?;
    let until = time(until, "refusal_until")?;
    Ok(Some(match refusal {
        Refusal::LockedOut => Verdict::LockedOut { until },
        Refusal::RateLimited => Verdict::RateLimited { until },
    }))
}

/// An attempt's reply as the policy verdict the file flow acts on, and
/// the period of the device it names (for a learned drift in seconds).
/// `RecordChanged`, `NotEnrolled` and `RetryWithHash` are handled before.
fn verdict_of(reply: &AttemptReply) -> Result<(Verdict, u32), String> {
    let verdict = reply.verdict;
    let device = || needed(reply.device.clone(), verdict, "device");
    let until = || reply.until.map(|t| time(t, "until")).transpose();
    let deny = |failure| {
        Ok(Verdict::Deny {
            failure,
            locked_until: until()?,
        })
    };
    let decided: Result<Verdict, String> = match verdict {
        AttemptVerdict::AllowTotp => Ok(Verdict::AllowTotp { device: device()? }),
        AttemptVerdict::AllowDrift => {
            let period = needed(reply.period, verdict, "period")?;
            let offset = needed(reply.drift_offset, verdict, "drift_offset")?;
            return Ok((
                Verdict::AllowDrift {
                    device: device()?,
                    offset,
                },
                period,
            ));
        }
        AttemptVerdict::AllowBackup => Ok(Verdict::AllowBackup {
            remaining: usize::try_from(needed(reply.remaining, verdict, "remaining")?)
                .unwrap_or(usize::MAX),
        }),
        AttemptVerdict::AllowDelivered => Ok(Verdict::AllowDelivered),
        AttemptVerdict::DriftSuspected => Ok(Verdict::DriftSuspected(DriftCheck {
            device: device()?,
            step: time(needed(reply.step, verdict, "step")?, "step")?,
            // Neither is shown nor sent back: only the device and step are
            // echoed, and the database checks them against what it stored.
            offset: reply.drift_offset.unwrap_or(0),
            off_by: reply
                .off_by
                .and_then(|o| u64::try_from(o).ok())
                .unwrap_or(0),
        })),
        AttemptVerdict::WrongCode => deny(Failure::WrongCode),
        AttemptVerdict::Replayed => deny(Failure::Replayed),
        AttemptVerdict::Malformed => deny(Failure::Malformed),
        AttemptVerdict::DriftNotConfirmed => deny(Failure::DriftNotConfirmed),
        AttemptVerdict::DriftSuspectedLocked => deny(Failure::DriftSuspected),
        AttemptVerdict::LockedOut => Ok(Verdict::LockedOut {
            until: time(needed(reply.until, verdict, "until")?, "until")?,
        }),
        AttemptVerdict::RateLimited => Ok(Verdict::RateLimited {
            until: time(needed(reply.until, verdict, "until")?, "until")?,
        }),
        AttemptVerdict::RecordChanged
        | AttemptVerdict::NotEnrolled
        | AttemptVerdict::RetryWithHash => Err(format!("{verdict:?} here")),
    };
    Ok((decided?, DEFAULT_PERIOD))
}

/// What a reply is, for an error naming a reply that does not fit.
fn kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Begin(_) => "a begin reply",
        Reply::Attempt(_) => "an attempt reply",
        Reply::Delivery(_) => "a delivery reply",
        Reply::Enroll { .. } => "an enroll reply",
        Reply::Unavailable { .. } => "an unavailable reply",
    }
}

/// A slot of the state directory's argon2 semaphore (`KDF_SLOTS`), if that
/// directory exists. Fleet mode keeps the file flow's bound on parallel
/// memory-hard work per host: the directory is normally there (the package
/// makes it; a host that used the file store has it) and its lock files are
/// all fleet mode touches in it. A host without one hashes unbounded, as
/// there is nothing else only root can make to lock on; an unsafe one
/// denies, as in the file flow.
fn kdf_slot(config: &Config) -> Result<Option<LockGuard>, AuthError> {
    match TrustedDir::open(&config.state_dir, Dir::Private) {
        Ok(dir) => Ok(Some(dir.lock_any(&KDF_SLOTS)?)),
        Err(StoreError::Io {
            errno: Errno::ENOENT,
            ..
        }) => Ok(None),
        Err(e) => Err(AuthError::Store(e)),
    }
}

/// argon2 of `digits` with the set's salt and parameters, in a slot.
fn hash_digits(config: &Config, digits: &str, kdf: &Kdf) -> Result<[u8; HASH_BYTES], AuthError> {
    let _slot = kdf_slot(config)?;
    backup::hash_digits(digits, &kdf.salt, kdf.params).ok_or(AuthError::Kdf)
}

impl Login<'_> {
    fn run(&mut self, user: Username) -> Step<Outcome> {
        let reply = self.begin(&user)?;
        let (user, reply) = if reply.enrolled {
            (user, reply)
        } else {
            match self.enrolled_first_name(&user)? {
                Some(found) => found,
                None => return self.unenrolled(&user, &reply),
            }
        };
        if reply.grace && self.rhost.is_some() {
            return Ok(Outcome::Skip(SkipReason::Grace));
        }
        let answered = Instant::now();
        let checked = reply
            .backup
            .as_ref()
            .ok_or_else(|| "an enrolled user without a backup set".to_string())
            .and_then(Kdf::from_wire)
            .and_then(|kdf| Ok((kdf, refusal_of(&reply)?)));
        let (kdf, refusal) = checked.map_err(|why| self.garbage(why))?;
        let begun = Begun {
            user,
            reply,
            kdf,
            refusal,
            answered,
        };
        self.prompt(&begun)
    }

    /// The prompt loop, as the file flow's (`login::authenticate_from`).
    fn prompt(&mut self, begun: &Begun) -> Step<Outcome> {
        let delivery_on = self.config.delivery.command.is_some();
        let mut prompt = PROMPT;
        let mut drift: Option<DriftEcho> = None;
        let mut delivered_now = false;
        loop {
            let raw = self.conv.ask_code(prompt)?;
            let answer = input::classify(&raw);
            drop(raw);
            if answer == Answer::Empty && delivery_on && drift.is_none() && !delivered_now {
                match self.send_code(begun)? {
                    Ok(target) => {
                        // Masked: whoever has the password sees the prompt.
                        self.conv.show_info(&format!(
                            "A code was sent to {}.",
                            delivery::mask_target(&target)
                        ));
                        prompt = SENT_PROMPT;
                        delivered_now = true;
                        continue;
                    }
                    Err(SendFailure::Refused(verdict)) => {
                        return Ok(tell(self.conv, verdict, DEFAULT_PERIOD));
                    }
                    Err(SendFailure::RecordChanged) => return Ok(record_changed(self.conv)),
                    Err(message) => {
                        self.conv.show_error(&message.to_user());
                        return Ok(Outcome::Deny(DenyReason::DeliveryFailed(
                            message.to_string(),
                        )));
                    }
                }
            }
            let pending = delivery_on
                && begun.reply.deliver_to.is_some()
                && (begun.reply.delivered_pending || delivered_now);
            let reply = self.attempt(begun, &answer, drift.as_ref(), pending)?;
            if matches!(
                reply.verdict,
                AttemptVerdict::RecordChanged | AttemptVerdict::NotEnrolled
            ) {
                // An admin changed or disabled the enrollment meanwhile.
                return Ok(record_changed(self.conv));
            }
            let (verdict, period) = verdict_of(&reply).map_err(|why| self.garbage(why))?;
            match verdict {
                Verdict::DriftSuspected(check) if drift.is_none() => {
                    self.conv.show_info(DRIFT_INFO);
                    prompt = NEXT_PROMPT;
                    drift = Some(DriftEcho {
                        device: check.device,
                        step: i64::try_from(check.step).unwrap_or(i64::MAX),
                    });
                }
                verdict => {
                    // Stored already; told before the user hears the outcome.
                    notice::tell_of(self.config, &begun.user, &verdict, period, self.clock);
                    return Ok(tell(self.conv, verdict, period));
                }
            }
        }
    }

    /// Sends one answer. An answer that could be a backup code (its length)
    /// or a code sent by message (delivery is on for the user) is hashed
    /// first — unless `Begin`'s cheap look still refuses the attempt: then
    /// it goes with `hash_deferred`, and is hashed only if the database
    /// answers `retry_with_hash` (the lock ended meanwhile). A TOTP-length
    /// answer is hashed only while a sent code is waiting: `Begin` said so,
    /// or this login sent one (`pending`).
    fn attempt(
        &mut self,
        begun: &Begun,
        answer: &Answer,
        drift: Option<&DriftEcho>,
        pending: bool,
    ) -> Step<AttemptReply> {
        let backup_length =
            matches!(answer, Answer::Digits(d) if d.len() == usize::from(begun.kdf.digits));
        let could_be_delivered = pending && answer.totp().is_some();
        let mut hash = if !backup_length && !could_be_delivered {
            AnswerHash::NotNeeded
        } else if begun.refused_now().is_some() {
            AnswerHash::Deferred
        } else {
            AnswerHash::Needed
        };
        loop {
            if hash == AnswerHash::Needed {
                let Answer::Digits(digits) = answer else {
                    return Err(AuthError::Kdf.into());
                };
                hash = AnswerHash::Done(hash_digits(self.config, digits, &begun.kdf)?);
            }
            let request = Request::Attempt(AttemptRequest {
                user: begun.user.as_str().into(),
                generation: begun.reply.generation,
                code: answer.totp().map(|c| Zeroizing::new(c.to_string())),
                hash: hash.value().map(|h| hex(&h)),
                hash_deferred: hash == AnswerHash::Deferred,
                drift: drift.cloned(),
                rhost: self.rhost.map(str::to_string),
            });
            let reply = match self.ask(&request)? {
                Reply::Attempt(reply) => reply,
                other => return Err(self.garbage(format!("{} to an attempt", kind(&other)))),
            };
            match (reply.verdict, hash) {
                (AttemptVerdict::RetryWithHash, AnswerHash::Deferred) => hash = AnswerHash::Needed,
                (AttemptVerdict::RetryWithHash, _) => {
                    return Err(self.garbage("retry_with_hash for an answer not deferred".into()));
                }
                _ => return Ok(reply),
            }
        }
    }

    /// A code by message, as `by_message::send_code`: cheap refusal first
    /// (no argon2 work for a locked user), then the code's hash is stored
    /// by the database (which counts the hour and checks the refusals
    /// again under the row lock), and only then is the code sent.
    fn send_code(&mut self, begun: &Begun) -> Step<Result<String, SendFailure>> {
        let Some(target) = begun.reply.deliver_to.clone() else {
            return Ok(Err(SendFailure::NotSetUp));
        };
        if let Some(verdict) = begun.refused_now() {
            return Ok(Err(SendFailure::Refused(verdict)));
        }
        let digits = begun.reply.totp_digits;
        if !otp::DIGITS.contains(&digits) {
            return Err(self.garbage(format!("codes of {digits} digits")));
        }
        let code = backup::random_digits(digits).ok_or(AuthError::Kdf)?;
        let hash = hash_digits(self.config, &code, &begun.kdf)?;
        let request = Request::RecordDelivery {
            user: begun.user.as_str().into(),
            generation: begun.reply.generation,
            hash: hex(&hash),
        };
        let reply = match self.ask(&request)? {
            Reply::Delivery(reply) => reply,
            other => return Err(self.garbage(format!("{} to a delivery", kind(&other)))),
        };
        let until = || {
            let until = reply
                .until
                .ok_or_else(|| format!("{:?} without until", reply.verdict))?;
            time(until, "until")
        };
        let refused = match reply.verdict {
            DeliveryVerdict::Stored => None,
            DeliveryVerdict::HourFull => {
                Some(until().map(|until| SendFailure::HourlyLimit { until }))
            }
            DeliveryVerdict::LockedOut => {
                Some(until().map(|until| SendFailure::Refused(Verdict::LockedOut { until })))
            }
            DeliveryVerdict::RateLimited => {
                Some(until().map(|until| SendFailure::Refused(Verdict::RateLimited { until })))
            }
            DeliveryVerdict::RecordChanged | DeliveryVerdict::NotEnrolled => {
                Some(Ok(SendFailure::RecordChanged))
            }
            DeliveryVerdict::NoTarget => Some(Ok(SendFailure::NotSetUp)),
        };
        if let Some(failure) = refused {
            return Ok(Err(failure.map_err(|why| self.garbage(why))?));
        }
        Ok(delivery::request(
            self.config.delivery.socket(),
            begun.user.as_str(),
            &target,
            &code,
        )
        .map(|()| target.clone())
        .map_err(SendFailure::Command))
    }

    /// The file flow's alias rule (`login::enrolled_first_name`), asked of
    /// the fleet: a name without an enrollment uses that of its uid's first
    /// name, if that one is enrolled.
    fn enrolled_first_name(&mut self, user: &Username) -> Step<Option<(Username, BeginReply)>> {
        let Some(first) = accounts::first_name_of_uid(user.as_str()) else {
            return Ok(None);
        };
        let Ok(first) = Username::parse(&first) else {
            return Ok(None);
        };
        let reply = self.begin(&first)?;
        Ok(reply.enrolled.then_some((first, reply)))
    }

    /// `unenrolled`, host-local as in the file flow; enrolling at login
    /// also needs the fleet policy's `enroll_at_login`.
    fn unenrolled(&mut self, user: &Username, reply: &BeginReply) -> Step<Outcome> {
        match self.config.unenrolled {
            Unenrolled::Skip => Ok(Outcome::Skip(SkipReason::Unenrolled)),
            Unenrolled::Deny => Ok(deny_after_prompt(self.conv, DenyReason::Unenrolled)?),
            Unenrolled::Enroll
                if reply.enroll_at_login && enroll::may_enroll(self.config, user) =>
            {
                self.enroll(user, reply)
            }
            Unenrolled::Enroll => Ok(deny_after_prompt(self.conv, DenyReason::Unenrolled)?),
        }
    }

    /// Enrollment at first login (`login::enroll`): the same screens; the
    /// database checks the code at its own time and creates the enrollment
    /// only if the user still has none.
    fn enroll(&mut self, user: &Username, reply: &BeginReply) -> Step<Outcome> {
        let params = Algorithm::parse(&reply.totp_algorithm)
            .map(|algorithm| TotpParams {
                algorithm,
                digits: reply.totp_digits,
                period: reply.totp_period,
            })
            .filter(|p| otp::DIGITS.contains(&p.digits) && otp::PERIODS.contains(&p.period));
        let Some(params) = params else {
            return Err(self.garbage(format!(
                "unusable TOTP parameters for a new enrollment ({}, {} digits, {} s)",
                reply.totp_algorithm, reply.totp_digits, reply.totp_period
            )));
        };
        let count = reply.backup_codes;
        if !(1..=MAX_BACKUP_CODES).contains(&count) {
            return Err(self.garbage(format!("{count} backup codes for a new enrollment")));
        }
        let secret = SecretKey::new(backup::random_bytes::<20>().ok_or(AuthError::Kdf)?.to_vec());
        enroll::show_new_secret(self.config, user, &secret, params, self.conv);
        let raw = self.conv.ask_code(PROMPT)?;
        let answer = input::classify(&raw);
        drop(raw);
        let Some(code) = answer.totp() else {
            return Ok(Outcome::Deny(DenyReason::EnrollmentNotConfirmed));
        };
        // Up to `count` argon2 hashes, in a slot like every other hash.
        let (set, codes) = {
            let _slot = kdf_slot(self.config)?;
            backup::new_backup_set(count, self.clock.now()).ok_or(AuthError::Kdf)?
        };
        let request = Request::EnrollFirst(EnrollRequest {
            user: user.as_str().into(),
            label: DEFAULT_DEVICE.into(),
            secret: secret.to_base32(),
            algorithm: params.algorithm.name().into(),
            digits: params.digits,
            period: params.period,
            code: Zeroizing::new(code.to_string()),
            backup: BackupSetWire {
                digits: set.digits,
                salt: hex(&set.salt),
                m_cost: set.kdf.m_cost,
                t_cost: set.kdf.t_cost,
                p_cost: set.kdf.p_cost,
                hashes: set.hashes.iter().map(|h| hex(h)).collect(),
            },
        });
        let verdict = match self.ask(&request)? {
            Reply::Enroll { verdict } => verdict,
            other => return Err(self.garbage(format!("{} to an enrollment", kind(&other)))),
        };
        match verdict {
            EnrollVerdict::Enrolled => {
                super::notice::tell(self.config, user, Event::Enrolled, self.clock);
                enroll::show_backup_codes(self.conv, &codes);
                Ok(Outcome::Allow(Method::Enrolled))
            }
            EnrollVerdict::WrongCode => Ok(Outcome::Deny(DenyReason::EnrollmentNotConfirmed)),
            EnrollVerdict::Exists => {
                self.conv.show_error(ENROLLED_MEANWHILE);
                Ok(Outcome::Deny(DenyReason::EnrollmentNotConfirmed))
            }
            // The fleet policy changed since `Begin`.
            EnrollVerdict::NotAllowed => Ok(Outcome::Deny(DenyReason::Unenrolled)),
        }
    }

    fn begin(&mut self, user: &Username) -> Step<BeginReply> {
        let request = Request::Begin {
            user: user.as_str().into(),
            rhost: self.rhost.map(str::to_string),
        };
        match self.ask(&request)? {
            Reply::Begin(reply) => Ok(reply),
            other => Err(self.garbage(format!("{} to a begin", kind(&other)))),
        }
    }

    /// Asks the agent. An `Unavailable` reply or a failure to ask ends the
    /// login: denied, the user told why in general words.
    fn ask(&mut self, request: &Request) -> Step<Reply> {
        let why = match client::ask(self.fleet, request) {
            Ok(Reply::Unavailable { reason, detail }) => FleetUnavailable::Agent { reason, detail },
            Ok(reply) => return Ok(reply),
            Err(e) => FleetUnavailable::Client(e),
        };
        Err(self.unavailable(why))
    }

    fn unavailable(&mut self, why: FleetUnavailable) -> Stop {
        self.conv.show_error(why.to_user());
        Stop::Outcome(Outcome::Deny(DenyReason::FleetUnavailable(why)))
    }

    /// A reply that does not fit: denied as an agent that cannot be asked.
    fn garbage(&mut self, why: String) -> Stop {
        self.unavailable(FleetUnavailable::Client(ClientError::Garbage { why }))
    }
}

#[cfg(test)]
mod tests;
