//! Sending a code by message through `[delivery] command` (an SMS gateway,
//! a chat bot, e-mail), and telling a user of a change to their second
//! factor through `[notify] command` (`notice`: the module hands a login's
//! events to the service as a second request kind, `!notify`; `twofactor`
//! runs the command itself for the admin's changes). Codes in two halves:
//!
//! - `client`: [`request`], in the PAM module. It connects to
//!   `[delivery] socket`, sends `USER\nTARGET\nCODE\n` and waits for one
//!   answer line, `ok` or `error: WHY` (the format is `protocol`). It never
//!   starts a process inside sshd, sudo or login.
//! - `service`: [`serve`], the delivery service (`twofactor deliver`),
//!   which pam-twofactor-deliver.socket starts for each connection (inetd
//!   style, `Accept=yes`, the connection as stdin and stdout). It reads the
//!   request, checks it, and runs the command with the user name and the
//!   target as arguments and the code on standard input — never in argv or
//!   the environment, which other users can read in /proc — with only PATH
//!   in its environment, in `/`, and killed if it does not finish in time.
//!
//! Why a service: every `pam_start` loads the module, and the loader binds
//! every libc function the module names — spawning and reaping a process
//! would add many — in every host process, whether or not anyone ever gets
//! a code by message. A service also keeps the command out of the host's
//! process (its limits, namespaces and signal state), puts the command's
//! stderr in the journal, and lets systemd sandbox it. The user still
//! learns whether the code went out: the module waits for the service's
//! answer.

mod client;
mod notice;
mod protocol;
mod service;

use std::fmt;

use crate::store::StoreError;

pub use client::{check_socket, mask_target, request, send_notice};
pub use notice::{Event, Notice, notify};
pub use protocol::{Incoming, Request};
pub use service::{Served, Setup, check_peer, serve};

/// Why a code could not be sent.
#[derive(Debug)]
pub enum DeliveryError {
    /// The command or the socket is missing or unsafe (owner, mode, type).
    Unsafe(StoreError),
    /// The request is malformed (service side) or cannot be written
    /// (a newline in a field).
    BadRequest(&'static str),
    /// The command could not be started.
    Spawn(String),
    /// The command exited unsuccessfully.
    Failed(String),
    /// The command did not finish within the timeout and was killed.
    Timeout,
    /// The module could not reach the delivery service.
    Unreachable(String),
    /// The delivery service answered with an error (its text).
    Service(String),
    /// The delivery service did not answer in time.
    NoAnswer,
    /// The delivery service could not read its configuration, or the
    /// configuration names no command.
    Config(String),
    /// The delivery service was connected to by someone other than root.
    Peer(u32),
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Unsafe(e) => write!(f, "delivery: {e}"),
            DeliveryError::BadRequest(why) => write!(f, "delivery request refused: {why}"),
            DeliveryError::Spawn(e) => write!(f, "delivery command could not start: {e}"),
            DeliveryError::Failed(status) => write!(f, "delivery command failed: {status}"),
            DeliveryError::Timeout => write!(
                f,
                "delivery command did not finish within {} s and was killed",
                service::TIMEOUT.as_secs()
            ),
            DeliveryError::Unreachable(e) => write!(
                f,
                "delivery service not reachable: {e} (is pam-twofactor-deliver.socket enabled?)"
            ),
            DeliveryError::Service(e) => write!(f, "delivery service: {e}"),
            DeliveryError::NoAnswer => write!(
                f,
                "delivery service did not answer within {} s",
                client::ANSWER_TIMEOUT.as_secs()
            ),
            DeliveryError::Config(e) => write!(f, "configuration: {e}"),
            DeliveryError::Peer(uid) => {
                write!(f, "refused a request from uid {uid} (only root may ask)")
            }
        }
    }
}

impl std::error::Error for DeliveryError {}
