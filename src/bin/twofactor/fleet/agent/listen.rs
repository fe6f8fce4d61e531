//! The listening socket: the one systemd passes (socket activation,
//! pam-twofactor-agent.socket, `Accept=no`), else `[fleet] agent_socket`
//! bound by the agent itself (a run by hand or without the socket unit).

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::sys::socket::{SockType, getsockopt, sockopt};
use nix::unistd::geteuid;

use super::process;

/// The socket from systemd when `LISTEN_PID` is this process and
/// `LISTEN_FDS` is 1; `None` when not started that way.
pub fn inherited() -> Result<Option<UnixListener>, String> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    if !ours {
        return Ok(None);
    }
    match std::env::var("LISTEN_FDS").as_deref() {
        Ok("1") => {}
        other => {
            return Err(format!(
                "systemd passed LISTEN_FDS={} sockets; the agent takes exactly one (one ListenStream= in pam-twofactor-agent.socket)",
                other.unwrap_or("?")
            ));
        }
    }
    let listener = process::listener_from_systemd()?;
    let stream = getsockopt(&listener, sockopt::SockType).map_err(|e| e.desc().to_string())?;
    let listening = getsockopt(&listener, sockopt::AcceptConn).map_err(|e| e.desc().to_string())?;
    if stream != SockType::Stream || !listening || listener.local_addr().is_err() {
        return Err(
            "the socket systemd passed is not a listening Unix stream socket (Accept=no, ListenStream=PATH)".into(),
        );
    }
    Ok(Some(listener))
}

/// Binds `path`: its directory is created (0755) if missing and must
/// belong to root (or the agent's user) and be writable by nobody else; a
/// stale socket is removed, anything else there is refused; the socket is
/// made 0600.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    let shown = path.display();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| format!("{shown}: not an absolute path to a socket"))?;
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?,
        Err(e) => return Err(format!("{}: {e}", dir.display())),
        Ok(_) => {}
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let owner_ok = meta.uid() == 0 || meta.uid() == geteuid().as_raw();
    if !meta.is_dir() || !owner_ok || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: must be a directory owned by root and writable by nobody else (mode {:04o}, owner uid {})",
            dir.display(),
            meta.mode() & 0o7777,
            meta.uid()
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)
            .map_err(|e| format!("{shown}: cannot remove the old socket: {e}"))?,
        Ok(_) => return Err(format!("{shown}: exists and is not a socket; not touched")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{shown}: {e}")),
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("{shown}: cannot bind: {e}"))?;
    // Between bind and chmod the socket has the umask's mode: the peer
    // check on every connection holds meanwhile.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{shown}: cannot make it 0600: {e}"))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private directory of the test's own (not /tmp itself: it is
    /// world-writable and refused as the socket's directory).
    pub fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("twofactor-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .expect("scratch dir");
        dir
    }

    /// bind creates the directory 0755, replaces a stale socket, makes the
    /// socket 0600, and refuses to remove a file that is not a socket.
    #[test]
    fn bind_makes_a_private_socket_and_replaces_only_sockets() {
        let dir = scratch("bind");
        let path = dir.join("run/agent.sock");
        let first = bind(&path).expect("bound");
        let dir_mode = std::fs::metadata(dir.join("run")).unwrap().mode() & 0o7777;
        assert_eq!(dir_mode, 0o755);
        let mode = std::fs::symlink_metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        drop(first);
        // The socket left behind is stale: replaced.
        let _second = bind(&path).expect("rebound over a stale socket");
        let file = dir.join("run/file");
        std::fs::write(&file, b"keep").unwrap();
        let error = bind(&file).expect_err("a regular file is not replaced");
        assert!(error.contains("not a socket"), "{error}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A directory others may write to is refused.
    #[test]
    fn bind_refuses_a_world_writable_directory() {
        let dir = scratch("open");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let error = bind(&dir.join("agent.sock")).expect_err("refused");
        assert!(error.contains("writable by nobody else"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Without LISTEN_PID naming this process, no socket is taken over.
    #[test]
    fn no_socket_activation_without_listen_pid() {
        // The test harness is not started by systemd.
        if std::env::var_os("LISTEN_PID").is_none() {
            assert!(matches!(inherited(), Ok(None)));
        }
    }
}
