//! How the module talks to the user: the prompts and the `Conversation`
//! trait the PAM door implements and tests script.

use zeroize::Zeroizing;

/// The prompt every user sees, enrolled or not.
pub const PROMPT: &str = "Verification code: ";
/// The prompt after a suspected clock drift.
pub const NEXT_PROMPT: &str = "Next verification code: ";
/// The prompt after a code was sent by message.
pub const SENT_PROMPT: &str = "Code from the message: ";
/// Shown when the caller is not root (a screen locker running as the
/// user): it cannot read the root-only state, so no code can be checked.
pub const NOT_ROOT_MESSAGE: &str = "This program cannot check verification codes: it does not run as root, and only root can read them. Log in with a program that runs as root, such as login on a text console, su or sudo, or ask your administrator.";

/// The conversation failed, was interrupted or gave no answer.
#[derive(Debug, PartialEq, Eq)]
pub struct ConvError;

/// How the module talks to the user.
pub trait Conversation {
    /// Asks for the code with echo off.
    fn ask_code(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, ConvError>;
    /// Shows an informational line (PAM_TEXT_INFO).
    fn show_info(&mut self, message: &str);
    /// Shows an error line (PAM_ERROR_MSG).
    fn show_error(&mut self, message: &str);
}
