//! Fleet mode (`[fleet]` in the config, docs/fleet.md): the enrollments and
//! every decision live in PostgreSQL; the module asks the local agent
//! (`twofactor agent`) over a root-only Unix socket and links no database
//! client. This folder holds what the module and the agent share, and the
//! module's client (`client`: one request, one reply, every wait bounded).

pub mod client;
pub mod protocol;
