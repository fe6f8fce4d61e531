//! A small fleet network on one machine (TESTING.md, "Hosts with their own
//! addresses"). Root only: callers gate on [`super::root_or_skip`] with
//! [`super::Needs::NetworkNamespace`] first.
//!
//! ```text
//!  root namespace                         network namespace tf<N>h<i>
//!  bridge tf<N>br  10.77.N.1/24  ──┬── veth tf<N>v<i> ══ eth0 10.77.N.(10+i)/24, lo up
//!                                  └── …
//! ```
//!
//! * `N` (1–254) is reserved per [`Net`] by a lock file
//!   `<sandbox base>/netns-<N>.lock` made with `O_EXCL` (holding our pid and
//!   what we made), so parallel tests and test processes never share a
//!   subnet, and every name (`tf<N>br`, `tf<N>v<i>`, `tf<N>h<i>`: at most
//!   9 characters, the kernel allows 15) is unique on the machine. A lock
//!   whose process is gone (a test process killed before its Drop ran:
//!   sshd and the agents die with it, by their parent-death signal) is
//!   removed with what that process made, by the next test process's
//!   first `Net::new`. A subnet that appears in the machine's own routes is
//!   never used.
//! * Only the test's own addresses receive traffic: nothing is routed or
//!   forwarded (no default route in the namespaces, `ip_forward` is not
//!   touched), the hosts reach the bridge address and each other.
//! * [`Net::link_down`] sets the root end of a host's veth down: its
//!   packets go nowhere (no RST, no ICMP), as with a pulled cable.
//! * Drop deletes the namespaces (their `eth0` and its peer with them) and
//!   the bridge, then the lock. Stop every process running in a namespace
//!   first: `ip netns del` only removes the name, a process inside keeps
//!   the namespace (and its veth) alive.
//!
//! A command runs in host `i` as `ip netns exec tf<N>h<i> PROGRAM …`
//! ([`Net::exec`]). With the e2e harness's private mount namespace the
//! order is **netns first, then `unshare --mount`**: `ip netns exec`
//! itself enters a new mount namespace (it remounts `/sys` for the network
//! namespace) and then `exec`s, so `ip netns exec NS unshare --mount …
//! ns.sh sshd` keeps one pid from start to sshd, and the overlay on `/etc`
//! that `ns.sh` mounts lands in a namespace of that process alone. The other
//! way round, `ip netns exec` would run inside the overlay namespace and
//! make yet another one, and `ns.sh`'s mounts would be made before the
//! network namespace is entered, by a process that is not the daemon.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The first two octets of every test subnet (`10.77.N.0/24`).
const PREFIX: &str = "10.77";

/// A bridge and `hosts` network namespaces; removed on drop.
pub struct Net {
    n: u8,
    hosts: usize,
    lock: PathBuf,
}

/// Runs `ip ARGS…`; `Err` with its stderr when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// [`ip`] that panics with the failure.
fn ip_ok(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

fn bridge_name(n: u8) -> String {
    format!("tf{n}br")
}

fn veth_name(n: u8, i: usize) -> String {
    format!("tf{n}v{i}")
}

fn netns_name(n: u8, i: usize) -> String {
    format!("tf{n}h{i}")
}

/// Whether `ip netns`, veth pairs and bridges work here (for
/// [`super::Needs::NetworkNamespace`]): makes and deletes a namespace with
/// a veth into it and a bridge.
pub fn probe() -> Result<(), String> {
    if super::find_program("ip").is_none() {
        return Err("`ip` is not in PATH (package iproute2)".into());
    }
    let tag = std::process::id() % 100_000;
    let ns = format!("tfprobe{tag}");
    let br = format!("tfpb{tag}");
    let veth = format!("tfpv{tag}");
    let result = (|| {
        ip(&["netns", "add", &ns])?;
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "master", &br])?;
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])
    })();
    let _ = ip(&["netns", "del", &ns]);
    let _ = ip(&["link", "del", &br]);
    result.map_err(|e| format!("network namespaces do not work here: {e}"))
}

/// Whether `10.77.n.` is in the machine's own routes (then never ours).
fn subnet_in_use(n: u8) -> bool {
    let out = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .expect("run `ip route`");
    String::from_utf8_lossy(&out.stdout).contains(&format!("{PREFIX}.{n}."))
}

/// Deletes what a [`Net`] with subnet `n` may have left (a killed test
/// process): its namespaces and bridge. Only our own `tf<n>…` names.
fn remove_leftovers(n: u8) {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run `ip netns list`");
    let prefix = format!("tf{n}h");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name
            .strip_prefix(&prefix)
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
        {
            let _ = ip(&["netns", "del", name]);
        }
    }
    // A namespace lives on after `ip netns del` while anything holds it
    // (a TCP socket of a killed agent retransmitting over a cut link does,
    // for minutes), and with it the veth: delete our veths by name.
    let veth = format!("tf{n}v");
    if let Ok(links) = fs::read_dir("/sys/class/net") {
        for link in links.flatten() {
            let name = link.file_name().to_string_lossy().into_owned();
            if name
                .strip_prefix(&veth)
                .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            {
                let _ = ip(&["link", "del", &name]);
            }
        }
    }
    let bridge = bridge_name(n);
    if Path::new("/sys/class/net").join(&bridge).exists() {
        let _ = ip(&["link", "del", &bridge]);
    }
}

/// The pid in a lock file, if it holds one yet.
fn lock_owner(lock: &Path) -> Option<u32> {
    fs::read_to_string(lock)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
}

/// Removes every `netns-<n>.lock` of a test process that is gone, and what
/// that process made (a test process killed before its Drop ran).
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix("netns-")
            .and_then(|r| r.strip_suffix(".lock"))
            .and_then(|n| n.parse::<u8>().ok())
        else {
            continue;
        };
        if lock_owner(&entry.path()).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        {
            remove_leftovers(n);
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Reserves a subnet: the lock file `netns-<n>.lock` made with O_EXCL.
fn reserve() -> (u8, PathBuf) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static STALE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let base = super::sandbox_base();
    STALE.get_or_init(|| remove_stale(&base));
    let start = std::process::id().wrapping_mul(7) + NEXT.fetch_add(1, Ordering::Relaxed);
    for k in 0..254u32 {
        let n = ((start + k) % 254 + 1) as u8;
        let lock = base.join(format!("netns-{n}.lock"));
        let mut file = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let owner = lock_owner(&lock);
                let alive = owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                // A lock being written has no pid yet: leave it alone.
                if owner.is_some() && !alive {
                    remove_leftovers(n);
                    let _ = fs::remove_file(&lock);
                }
                continue;
            }
            Err(e) => panic!("create {}: {e}", lock.display()),
        };
        writeln!(file, "{}", std::process::id()).expect("write the netns lock");
        // Names of a killed run that had this subnet without its lock file.
        remove_leftovers(n);
        if subnet_in_use(n) {
            let _ = fs::remove_file(&lock);
            continue;
        }
        return (n, lock);
    }
    panic!(
        "no free test subnet {PREFIX}.N.0/24 (locks in {})",
        base.display()
    );
}

impl Net {
    /// A bridge at `10.77.N.1/24` and `hosts` namespaces, host `i` (from
    /// 0) at `10.77.N.(10+i)/24` with `lo` up.
    pub fn new(hosts: usize) -> Net {
        assert!((1..=200).contains(&hosts), "1 to 200 hosts");
        let (n, lock) = reserve();
        // From here Drop removes whatever was made, also on a panic.
        let net = Net { n, hosts, lock };
        let bridge = bridge_name(n);
        ip_ok(&["link", "add", &bridge, "type", "bridge"]);
        ip_ok(&[
            "addr",
            "add",
            &format!("{}/24", net.bridge_address()),
            "dev",
            &bridge,
        ]);
        ip_ok(&["link", "set", &bridge, "up"]);
        for i in 0..hosts {
            let ns = netns_name(n, i);
            let veth = veth_name(n, i);
            ip_ok(&["netns", "add", &ns]);
            ip_ok(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip_ok(&["link", "set", &veth, "master", &bridge]);
            ip_ok(&["link", "set", &veth, "up"]);
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns, "ip"];
                all.extend_from_slice(args);
                ip_ok(&all);
            };
            inside(&["link", "set", "lo", "up"]);
            inside(&[
                "addr",
                "add",
                &format!("{}/24", net.address(i)),
                "dev",
                "eth0",
            ]);
            inside(&["link", "set", "eth0", "up"]);
        }
        net
    }

    /// `10.77.N.1`: the bridge's address in the root namespace, where the
    /// database listens.
    pub fn bridge_address(&self) -> String {
        format!("{PREFIX}.{}.1", self.n)
    }

    /// `10.77.N.0/24` (for `pg_hba.conf`).
    pub fn subnet(&self) -> String {
        format!("{PREFIX}.{}.0/24", self.n)
    }

    /// Host `i`'s address, `10.77.N.(10+i)`.
    pub fn address(&self, i: usize) -> String {
        assert!(i < self.hosts, "no host {i}");
        format!("{PREFIX}.{}.{}", self.n, 10 + i)
    }

    /// Host `i`'s network namespace (for `ip netns exec`).
    pub fn netns(&self, i: usize) -> String {
        assert!(i < self.hosts, "no host {i}");
        netns_name(self.n, i)
    }

    /// `ip netns exec <host i> program`: add the arguments. `ip` execs the
    /// program, so the child's pid is the program's.
    pub fn exec(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns(i)]).arg(program);
        cmd
    }

    /// Cuts host `i` off: the bridge end of its veth goes down.
    pub fn link_down(&self, i: usize) {
        ip_ok(&["link", "set", &veth_name(self.n, i), "down"]);
    }

    /// Connects host `i` again, and waits (at most 5 s) until the bridge
    /// forwards its packets. The neighbour (ARP) entries between host `i`
    /// and the bridge are flushed: resolutions that failed or were still
    /// failing while the link was down would otherwise refuse the first
    /// new connections ("No route to host") until they time out.
    pub fn link_up(&self, i: usize) {
        let veth = veth_name(self.n, i);
        ip_ok(&["link", "set", &veth, "up"]);
        let ns = self.netns(i);
        ip_ok(&["netns", "exec", &ns, "ip", "neigh", "flush", "dev", "eth0"]);
        ip_ok(&[
            "neigh",
            "flush",
            "dev",
            &bridge_name(self.n),
            "to",
            &self.address(i),
        ]);
        let sys = Path::new("/sys/class/net").join(&veth);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let read = |f: &str| fs::read_to_string(sys.join(f)).unwrap_or_default();
            // brport/state 3: BR_STATE_FORWARDING.
            if read("operstate").trim() == "up" && read("brport/state").trim() == "3" {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{veth} not forwarding 5 s after `ip link set up`"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.hosts {
            let _ = ip(&["netns", "del", &netns_name(self.n, i)]);
            // Normally gone with its namespace; not if a process kept it.
            if Path::new("/sys/class/net")
                .join(veth_name(self.n, i))
                .exists()
            {
                let _ = ip(&["link", "del", &veth_name(self.n, i)]);
            }
        }
        let _ = ip(&["link", "del", &bridge_name(self.n)]);
        let _ = fs::remove_file(&self.lock);
    }
}
