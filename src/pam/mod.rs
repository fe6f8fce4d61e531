//! The one door to PAM. It reads the arguments, the user, the service and
//! the remote host once, hands `login::authenticate` the system clock (read
//! at each decision, not here), logs, and maps
//! the core's answer to a PAM code in exactly one function (`pam_code`).
//!
//! The `pam_hooks!` macro generates the six `extern "C"` entry points with a
//! `catch_unwind` around each; our own code has no panicking paths (clippy
//! denies unwrap/expect/panic), so that net is a last resort, not a plan.

use std::ffi::CStr;
use std::path::Path;

use pam::constants::{
    PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF, PAM_SILENT, PAM_TEXT_INFO, PamFlag, PamResultCode,
};
use pam::conv::Conv;
use pam::items::{RHost, Service};
use pam::module::{PamHandle, PamHooks};
use zeroize::Zeroizing;

use crate::config::{self, Config};
use crate::host::clock;
use crate::host::log::{self, Severity};
use crate::login::{self, AuthError, ConvError, Conversation, DenyReason, Outcome};
use crate::records::username::escape;

/// The module type the entry points dispatch to.
pub struct TwoFactor;

/// The six `extern "C"` entry points libpam calls, made by `pam_hooks!`:
/// the library's only unsafe code (`no_mangle`, raw pointers from libpam).
#[allow(unsafe_code)]
mod hooks {
    use super::TwoFactor;

    pam::pam_hooks!(TwoFactor);
}

/// A module argument the module refuses (the login is denied with
/// PAM_SERVICE_ERR and this is logged).
#[derive(Debug, PartialEq, Eq)]
pub enum ArgError {
    /// Not UTF-8 (shown escaped).
    NotUtf8(String),
    /// `config=` with a relative path.
    RelativeConfig(String),
    /// Anything but `config=` and `debug`.
    Unknown(String),
}

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgError::NotUtf8(arg) => write!(f, "module argument {arg:?} is not UTF-8"),
            ArgError::RelativeConfig(path) => {
                write!(f, "config={path} must be an absolute path")
            }
            ArgError::Unknown(arg) => write!(
                f,
                "unknown module argument {arg:?} (only config=/absolute/path and debug are accepted)"
            ),
        }
    }
}

/// Parsed module arguments, borrowed from PAM's argv (no allocation).
#[derive(Debug, PartialEq, Eq)]
pub struct ModuleArgs<'a> {
    pub config: &'a Path,
    pub debug: bool,
}

impl<'a> ModuleArgs<'a> {
    /// Accepts `config=/absolute/path` and `debug`; anything else is an
    /// error, never ignored (../shared/SECURITY.md, "Fail closed").
    pub fn parse(args: &[&'a CStr]) -> Result<ModuleArgs<'a>, ArgError> {
        let mut parsed = ModuleArgs {
            config: Path::new(config::DEFAULT_PATH),
            debug: false,
        };
        for arg in args {
            let Ok(arg) = arg.to_str() else {
                return Err(ArgError::NotUtf8(escape(&arg.to_string_lossy())));
            };
            if arg == "debug" {
                parsed.debug = true;
            } else if let Some(path) = arg.strip_prefix("config=") {
                let path = Path::new(path);
                if !path.is_absolute() {
                    return Err(ArgError::RelativeConfig(escape(&path.to_string_lossy())));
                }
                parsed.config = path;
            } else {
                return Err(ArgError::Unknown(escape(arg)));
            }
        }
        Ok(parsed)
    }
}

/// The conversation through PAM; PAM_SILENT hides info and error lines.
struct PamConversation<'a> {
    conv: Option<Conv<'a>>,
    silent: bool,
}

impl Conversation for PamConversation<'_> {
    fn ask_code(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, ConvError> {
        let conv = self.conv.as_ref().ok_or(ConvError)?;
        match conv.send(PAM_PROMPT_ECHO_OFF, prompt) {
            Ok(Some(answer)) => Ok(Zeroizing::new(answer.as_bytes().to_vec())),
            _ => Err(ConvError),
        }
    }

    fn show_info(&mut self, message: &str) {
        if let (Some(conv), false) = (&self.conv, self.silent) {
            let _ = conv.send(PAM_TEXT_INFO, message);
        }
    }

    fn show_error(&mut self, message: &str) {
        if let (Some(conv), false) = (&self.conv, self.silent) {
            let _ = conv.send(PAM_ERROR_MSG, message);
        }
    }
}

/// The single mapping from the core's answer to a PAM code. Only a skip an
/// admin wrote down yields PAM_IGNORE: `unenrolled = "skip"`, `[exempt]`
/// groups and networks, `[grace]`. A fleet that cannot decide is
/// PAM_AUTHINFO_UNAVAIL, like a state directory that cannot be read.
pub fn pam_code(result: &Result<Outcome, AuthError>) -> PamResultCode {
    match result {
        Ok(Outcome::Allow(_)) => PamResultCode::PAM_SUCCESS,
        Ok(Outcome::Skip(_)) => PamResultCode::PAM_IGNORE,
        Ok(Outcome::Deny(DenyReason::FleetUnavailable(_))) => PamResultCode::PAM_AUTHINFO_UNAVAIL,
        Ok(Outcome::Deny(_)) => PamResultCode::PAM_AUTH_ERR,
        Err(AuthError::Conversation) => PamResultCode::PAM_CONV_ERR,
        Err(AuthError::Store(_) | AuthError::Record { .. } | AuthError::CallerNotRoot { .. }) => {
            PamResultCode::PAM_AUTHINFO_UNAVAIL
        }
        Err(AuthError::Kdf) => PamResultCode::PAM_SYSTEM_ERR,
    }
}

/// A PAM item for the log line: escaped, or `-` when unset.
fn item(item: Option<&CStr>) -> String {
    item.map_or_else(|| "-".into(), |s| escape(&s.to_string_lossy()))
}

fn authenticate(pamh: &mut PamHandle, args: &[&CStr], flags: PamFlag) -> PamResultCode {
    let args = match ModuleArgs::parse(args) {
        Ok(a) => a,
        Err(message) => {
            log::send(Severity::Error, &format!("configuration error: {message}"));
            return PamResultCode::PAM_SERVICE_ERR;
        }
    };
    let user = match pamh.get_user(None) {
        Ok(user) => user,
        Err(code) => {
            log::send(Severity::Error, "could not get the user name from PAM");
            // Never pass PAM_IGNORE-like codes through: the user is unknown.
            return if code == PamResultCode::PAM_CONV_ERR {
                PamResultCode::PAM_CONV_ERR
            } else {
                PamResultCode::PAM_USER_UNKNOWN
            };
        }
    };
    let service = pamh.get_item::<Service>().ok().flatten().map(|s| s.0);
    let rhost_item = pamh.get_item::<RHost>().ok().flatten().map(|s| s.0);
    let who = format!(
        "user={} service={} rhost={}",
        escape(&user),
        item(service),
        item(rhost_item)
    );
    // The raw remote host for exemptions and grace; empty or non-UTF-8 = none.
    let rhost: Option<String> = rhost_item
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_string);

    let config = match Config::load(args.config) {
        Ok(c) => c,
        Err(e) => {
            log::send(
                Severity::Error,
                &format!("configuration error: {e}; denying {who}"),
            );
            return PamResultCode::PAM_SERVICE_ERR;
        }
    };
    if args.debug {
        log::send(
            Severity::Debug,
            &format!("using {} for {who}", args.config.display()),
        );
    }
    let mut conv = PamConversation {
        conv: pamh.get_item::<Conv>().ok().flatten(),
        silent: flags & PAM_SILENT != 0,
    };
    let result = login::authenticate_from(
        &config,
        &user,
        rhost.as_deref(),
        &mut conv,
        &clock::SystemClock,
    );
    let code = pam_code(&result);
    match &result {
        Ok(outcome) => {
            let severity = match outcome {
                // The admin must act: the agent or the database is down.
                Outcome::Deny(DenyReason::FleetUnavailable(_)) => Severity::Error,
                Outcome::Deny(_) => Severity::Warning,
                Outcome::Allow(_) | Outcome::Skip(_) => Severity::Info,
            };
            log::send_parts(severity, &[&outcome.describe(), " ", &who]);
        }
        Err(AuthError::Conversation) => log::send_parts(
            Severity::Warning,
            &["denied: conversation failed or was interrupted ", &who],
        ),
        Err(e) => log::send(Severity::Error, &format!("error: {e}; denying {who}")),
    }
    code
}

impl PamHooks for TwoFactor {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        authenticate(pamh, &args, flags)
    }

    /// There are no credentials to set; PAM_SUCCESS keeps `required` stacks happy.
    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Failure;
    use crate::store::StoreError;

    /// Only `config=/abs` and `debug` are accepted.
    #[test]
    fn module_arguments_are_strict() {
        let parsed = ModuleArgs::parse(&[c"config=/etc/x.toml", c"debug"]).unwrap();
        assert_eq!(
            parsed,
            ModuleArgs {
                config: Path::new("/etc/x.toml"),
                debug: true
            }
        );
        assert_eq!(
            ModuleArgs::parse(&[]).unwrap().config,
            Path::new(config::DEFAULT_PATH)
        );
        assert_eq!(
            ModuleArgs::parse(&[c"nullok"]),
            Err(ArgError::Unknown("nullok".into()))
        );
        assert_eq!(
            ModuleArgs::parse(&[c"config=rel.toml"]),
            Err(ArgError::RelativeConfig("rel.toml".into()))
        );
        assert_eq!(
            ModuleArgs::parse(&[c"debug", c"\xff"]),
            Err(ArgError::NotUtf8("\\xef\\xbf\\xbd".into()))
        );
    }

    /// Every outcome and error maps to exactly one code; only Skip ignores.
    #[test]
    fn every_outcome_maps_to_one_code() {
        use crate::login::{DenyReason, Method, SkipReason};
        let cases: Vec<(Result<Outcome, AuthError>, PamResultCode)> = vec![
            (
                Ok(Outcome::Allow(Method::Totp { device: "d".into() })),
                PamResultCode::PAM_SUCCESS,
            ),
            (
                Ok(Outcome::Allow(Method::Backup { remaining: 0 })),
                PamResultCode::PAM_SUCCESS,
            ),
            (
                Ok(Outcome::Skip(SkipReason::Unenrolled)),
                PamResultCode::PAM_IGNORE,
            ),
            (
                Ok(Outcome::Skip(SkipReason::Grace)),
                PamResultCode::PAM_IGNORE,
            ),
            (
                Ok(Outcome::Allow(Method::Delivered)),
                PamResultCode::PAM_SUCCESS,
            ),
            (
                Ok(Outcome::Allow(Method::Enrolled)),
                PamResultCode::PAM_SUCCESS,
            ),
            (
                Ok(Outcome::Deny(DenyReason::EnrollmentNotConfirmed)),
                PamResultCode::PAM_AUTH_ERR,
            ),
            (
                Ok(Outcome::Deny(DenyReason::DeliveryFailed("x".into()))),
                PamResultCode::PAM_AUTH_ERR,
            ),
            (
                Ok(Outcome::Deny(DenyReason::Unenrolled)),
                PamResultCode::PAM_AUTH_ERR,
            ),
            (
                Ok(Outcome::Deny(DenyReason::BadUsername("x".into()))),
                PamResultCode::PAM_AUTH_ERR,
            ),
            (
                Ok(Outcome::Deny(DenyReason::Failed {
                    failure: Failure::WrongCode,
                    locked_until: None,
                })),
                PamResultCode::PAM_AUTH_ERR,
            ),
            (
                Ok(Outcome::Deny(DenyReason::LockedOut { until: 1 })),
                PamResultCode::PAM_AUTH_ERR,
            ),
            (
                Ok(Outcome::Deny(DenyReason::RateLimited { until: 1 })),
                PamResultCode::PAM_AUTH_ERR,
            ),
            (
                Ok(Outcome::Deny(DenyReason::RecordChanged)),
                PamResultCode::PAM_AUTH_ERR,
            ),
            (
                Ok(Outcome::Deny(DenyReason::FleetUnavailable(
                    crate::login::FleetUnavailable::Agent {
                        reason: crate::fleet::protocol::Unavailable::Timeout,
                        detail: "x".into(),
                    },
                ))),
                PamResultCode::PAM_AUTHINFO_UNAVAIL,
            ),
            (
                Ok(Outcome::Deny(DenyReason::FleetUnavailable(
                    crate::login::FleetUnavailable::Client(
                        crate::fleet::client::ClientError::Garbage { why: "x".into() },
                    ),
                ))),
                PamResultCode::PAM_AUTHINFO_UNAVAIL,
            ),
            (Err(AuthError::Conversation), PamResultCode::PAM_CONV_ERR),
            (
                Err(AuthError::Store(StoreError::BadPath { path: "x".into() })),
                PamResultCode::PAM_AUTHINFO_UNAVAIL,
            ),
            (
                Err(AuthError::Record {
                    path: "x".into(),
                    error: crate::records::RecordError::Version(9),
                }),
                PamResultCode::PAM_AUTHINFO_UNAVAIL,
            ),
            (Err(AuthError::Kdf), PamResultCode::PAM_SYSTEM_ERR),
            (
                Err(AuthError::CallerNotRoot {
                    uid: 1000,
                    error: StoreError::BadPath { path: "x".into() },
                }),
                PamResultCode::PAM_AUTHINFO_UNAVAIL,
            ),
        ];
        for (result, want) in cases {
            assert_eq!(pam_code(&result), want, "{result:?}");
        }
    }
}
