//! The command line: clap's definition of `twofactor`'s arguments, from
//! which the parser, the help texts and the shell completions all come.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "twofactor",
    version,
    about = "Manage pam_twofactor enrollments",
    long_about = "Manage pam_twofactor enrollments: enroll users, list them, look after \
their devices, backup codes and lock, import from google-authenticator or pam_oath, and \
check the configuration. Runs as root (the files are root's). See twofactor(8).",
    after_help = "Exit status: 0 success, 1 check found problems (and see twofactor(8)), \
2 usage, 3 not root, 4 bad or unknown user, 5 already enrolled or not enrolled, \
6 configuration, file or I/O problem, 7 bad secret or option value.\n\n\
Example:\n  sudo twofactor enroll alice"
)]
pub(crate) struct Cli {
    /// Configuration file (default /etc/security/twofactor.toml, root
    /// only); it must exist. May come before or after the subcommand.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create a secret and backup codes for USER and show them once.
    #[command(after_help = "Examples:\n  twofactor enroll alice\n  \
twofactor enroll alice --if-missing --json\n  \
twofactor enroll alice --add --label tablet")]
    Enroll {
        /// The user to enroll (a name in the passwd database).
        user: String,
        /// Read a base32 secret from FILE instead of making a random
        /// 160-bit one: a file only root can read (mode 0600), or - for
        /// standard input.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
        /// Refused: a secret in the arguments is readable by every local
        /// user (/proc/PID/cmdline). Hidden, and kept so that the refusal
        /// can name --secret-file (and never echo the value).
        #[arg(long, hide = true, num_args = 0..=1, allow_hyphen_values = true)]
        secret: Option<Vec<String>>,
        /// SHA1, SHA256 or SHA512 (default from the config).
        #[arg(long, value_name = "A")]
        algorithm: Option<String>,
        /// Digits per code: 6, 7 or 8 (default from the config).
        #[arg(long, value_name = "N")]
        digits: Option<u8>,
        /// Seconds per code, 10 to 300 (default from the config).
        #[arg(long, value_name = "S")]
        period: Option<u32>,
        /// Replace an existing enrollment (new secret, new backup codes).
        #[arg(long, conflicts_with_all = ["add", "if_missing"])]
        force: bool,
        /// Add another device to an existing enrollment (needs --label).
        #[arg(long, requires = "label", conflicts_with = "if_missing")]
        add: bool,
        /// The device's label (default "default").
        #[arg(long, value_name = "NAME")]
        label: Option<String>,
        /// Where codes by message are sent: +E.164 phone number, e-mail
        /// address or chat id (see set-delivery).
        #[arg(long, value_name = "TARGET")]
        deliver_to: Option<String>,
        /// Exit 0 and change nothing when USER is already enrolled
        /// (for provisioning scripts; "changed": false).
        #[arg(long)]
        if_missing: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List every enrolled user: devices, backup codes left, failures,
    /// lock and last successful login.
    #[command(after_help = "Example:\n  twofactor list --json")]
    List {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List USER's devices.
    #[command(after_help = "Example:\n  twofactor devices alice")]
    Devices {
        /// An enrolled user.
        user: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove one of USER's devices (not the last one: use disable).
    #[command(after_help = "Example:\n  twofactor remove-device alice tablet")]
    RemoveDevice {
        /// An enrolled user.
        user: String,
        /// The label of the device to remove (see: twofactor devices USER).
        label: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set where USER's codes by message go; without TARGET, stop sending.
    #[command(
        after_help = "Examples:\n  twofactor set-delivery alice +15555550100\n  \
twofactor set-delivery alice alice@example.org\n  twofactor set-delivery alice"
    )]
    SetDelivery {
        /// An enrolled user.
        user: String,
        /// A phone number (+ and 8 to 15 digits, E.164), an e-mail address
        /// (one @, a dot in the domain) or a chat id (digits, optionally
        /// with a leading -); omit it to stop codes by message.
        #[arg(allow_hyphen_values = true)]
        target: Option<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Import from google-authenticator or pam_oath.
    #[command(after_help = "Examples:\n  \
twofactor import alice --google-authenticator /home/alice/.google_authenticator\n  \
twofactor import --oath-usersfile /etc/users.oath")]
    Import {
        /// The user (with --google-authenticator).
        user: Option<String>,
        /// A ~/.google_authenticator file (TOTP only).
        #[arg(
            long,
            value_name = "FILE",
            requires = "user",
            conflicts_with = "oath_usersfile"
        )]
        google_authenticator: Option<PathBuf>,
        /// A pam_oath users file: every TOTP line is imported.
        #[arg(long, value_name = "FILE", conflicts_with = "user")]
        oath_usersfile: Option<PathBuf>,
        /// Replace existing enrollments.
        #[arg(long)]
        force: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show enrollment, devices, delivery target, backup codes left,
    /// failures and lock.
    #[command(after_help = "Example:\n  twofactor status alice")]
    Status {
        /// The user (need not be enrolled).
        user: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Clear USER's failure count and lock.
    #[command(after_help = "Example:\n  twofactor unlock alice")]
    Unlock {
        /// An enrolled user.
        user: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Replace USER's backup codes; the old ones stop working.
    #[command(after_help = "Example:\n  twofactor backup-codes alice")]
    BackupCodes {
        /// An enrolled user.
        user: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove USER's enrollment.
    #[command(after_help = "Examples:\n  twofactor disable alice\n  \
twofactor disable alice --if-enrolled --json")]
    Disable {
        /// An enrolled user (may already be gone from passwd).
        user: String,
        /// Exit 0 and change nothing when USER is not enrolled
        /// (for provisioning scripts; "changed": false).
        #[arg(long)]
        if_enrolled: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The delivery service: read one request for a code by message from
    /// stdin, run [delivery] command, answer on stdout (started by
    /// pam-twofactor-deliver.socket for each connection).
    #[command(after_help = "Example (really sends the code):\n  \
printf 'alice\\n+15555550100\\n123456\\n' | twofactor deliver")]
    Deliver,
    /// The fleet agent: answer the PAM module's requests over [fleet]
    /// agent_socket by calling the fleet's database, each within [fleet]
    /// deadline_seconds (started by pam-twofactor-agent.socket; runs until
    /// stopped).
    #[command(after_help = "Example (by hand, in the foreground):\n  twofactor agent")]
    Agent,
    /// Validate the config and every file in the state directory.
    #[command(after_help = "Example:\n  twofactor check")]
    Check {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// For tests only: read the PAM stacks, passwd and group below DIR
        /// instead of / (the config and state directory are unchanged).
        #[arg(long, hide = true, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    // --- fleet mode (twofactor fleet …) ---
    /// Fleet mode: set up the database, add and remove hosts, check it,
    /// and move this host's enrollments into it (needs [fleet]).
    #[command(after_help = "Examples:\n  twofactor fleet init\n  \
twofactor fleet add-host web1 --password-file /root/web1.password\n  \
twofactor fleet status\n  twofactor fleet push")]
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    // --- end of fleet mode ---
    /// Print a shell completion script (bash, zsh or fish) on stdout; the
    /// Debian package installs them.
    #[command(hide = true, after_help = "Example:\n  twofactor completions bash")]
    Completions {
        /// bash, zsh or fish.
        #[arg(value_parser = ["bash", "zsh", "fish"])]
        shell: String,
    },
}

impl Command {
    /// Whether the command was asked for JSON (its errors then too).
    pub(crate) fn json(&self) -> bool {
        match self {
            Command::Enroll { json, .. }
            | Command::List { json }
            | Command::Devices { json, .. }
            | Command::RemoveDevice { json, .. }
            | Command::SetDelivery { json, .. }
            | Command::Import { json, .. }
            | Command::Status { json, .. }
            | Command::Unlock { json, .. }
            | Command::BackupCodes { json, .. }
            | Command::Disable { json, .. }
            | Command::Check { json, .. } => *json,
            Command::Fleet { command } => command.json(),
            Command::Deliver | Command::Agent | Command::Completions { .. } => false,
        }
    }
}

/// `twofactor fleet …`: run with a config whose `[fleet]` names the
/// database and a role that may do the command (the database
/// administrator's for `init`, `set-policy`, `add-host` and
/// `remove-host`; an admin role for `push`).
#[derive(Subcommand)]
pub(crate) enum FleetCommand {
    /// Create or update the fleet's schema, functions and roles from the
    /// SQL files built in (idempotent); on creation, set the fleet policy
    /// from this config.
    #[command(after_help = "Example:\n  twofactor fleet init")]
    Init {
        /// Let logins be decided while no synchronous standby confirms
        /// commits (a failover can then lose used codes and locks): for a
        /// test fleet only. Prints a warning.
        #[arg(long)]
        no_require_sync_standby: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copy this config's rules (window, lockout, rate limit, drift,
    /// grace, backup codes, delivery, enrollment at login, TOTP
    /// parameters) into the fleet's policy.
    #[command(after_help = "Examples:\n  twofactor fleet set-policy\n  \
twofactor fleet set-policy --require-sync-standby yes")]
    SetPolicy {
        /// Whether every attempt is refused while no synchronous standby
        /// confirms commits (the default yes; no prints a warning).
        #[arg(long, value_name = "yes|no", value_parser = ["yes", "no"])]
        require_sync_standby: Option<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create host NAME's login role tf_host_NAME (a member of
    /// twofactor_host): by client certificate, or with --password-file.
    #[command(after_help = "Examples:\n  twofactor fleet add-host web1\n  \
twofactor fleet add-host web2 --password-file /root/web2.password")]
    AddHost {
        /// A short host name: 1 to 40 of a-z, 0-9 and '-'.
        name: String,
        /// Make a random password for the role and write it to FILE, a new
        /// file (mode 0600), to copy to the host ([fleet] password_file);
        /// the server only ever sees its SCRAM verifier.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cut host NAME off: end its sessions and drop its role at once.
    #[command(after_help = "Example:\n  twofactor fleet remove-host web1")]
    RemoveHost {
        /// The host's name, as given to add-host.
        name: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the database's health: reachable, schema version, synchronous
    /// standby, this role, and whether hosts could read seeds (exit 1
    /// with warnings).
    #[command(after_help = "Example:\n  twofactor fleet status --json")]
    Status {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move this host's file enrollments (devices, backup codes, used
    /// codes, failures and lock) into the fleet; the files stay.
    #[command(after_help = "Examples:\n  twofactor fleet push\n  twofactor fleet push alice bob")]
    Push {
        /// The users to push (default: every user enrolled on this host).
        users: Vec<String>,
        /// Replace a user's fleet enrollment (otherwise it is skipped).
        #[arg(long)]
        force: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl FleetCommand {
    /// Whether the command was asked for JSON.
    pub(crate) fn json(&self) -> bool {
        match self {
            FleetCommand::Init { json, .. }
            | FleetCommand::SetPolicy { json, .. }
            | FleetCommand::AddHost { json, .. }
            | FleetCommand::RemoveHost { json, .. }
            | FleetCommand::Status { json }
            | FleetCommand::Push { json, .. } => *json,
        }
    }
}
