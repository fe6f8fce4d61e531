//! Fleet mode in the `twofactor` binary: the agent (`twofactor agent`) and
//! the `fleet` commands, the only code that talks to PostgreSQL.

pub mod agent;
pub mod db;

// The admin side: `twofactor fleet …`, the admin commands against the
// fleet (`store`), and the fleet's part of `twofactor check`.
pub mod admin;
pub mod migrate;
pub mod names;
pub mod policy;
pub mod push;
pub mod session;
pub mod setup;
pub mod status;
pub mod store;

use pam_twofactor::admin::{Admin, AdminError};

use crate::cli::FleetCommand;

/// Runs one `twofactor fleet` command.
pub fn run(admin: Admin, command: FleetCommand) -> Result<u8, AdminError> {
    match command {
        FleetCommand::Init {
            no_require_sync_standby,
            json,
        } => setup::run_init(&admin, !no_require_sync_standby, json),
        FleetCommand::SetPolicy {
            require_sync_standby,
            json,
        } => setup::run_set_policy(
            &admin,
            require_sync_standby.map(|answer| answer == "yes"),
            json,
        ),
        FleetCommand::AddHost {
            name,
            password_file,
            json,
        } => setup::run_add_host(&admin, &name, password_file.as_deref(), json),
        FleetCommand::RemoveHost { name, json } => setup::run_remove_host(&admin, &name, json),
        FleetCommand::Status { json } => status::run_status(&admin, json),
        FleetCommand::Push { users, force, json } => {
            let mut fleet = admin::FleetAdmin::connect(admin)?;
            push::run_push(&mut fleet, &users, force, json)
        }
    }
}
