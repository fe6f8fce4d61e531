//! Fleet mode in the `twofactor` binary: the agent (`twofactor agent`) and
//! the `fleet` commands, the only code that talks to PostgreSQL.

pub mod agent;
pub mod db;
