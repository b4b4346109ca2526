//! Network namespaces (`--netns NAME|PATH`): the TUN device lives in a
//! sandbox namespace while tcpd itself, its threads and its kernel sockets
//! stay in the namespace it was started in.
//!
//! The main thread never moves. A short-lived thread enters the namespace
//! (`setns(2)` with `CLONE_NEWNET` moves only the calling thread), does its
//! work there and ends: a TUN fd or netlink socket it opened stays bound to
//! the namespace it was opened in, wherever it is used later (the kernel
//! binds a device and a socket to the `struct net` of the opening task).
//! Every later change in the sandbox (teardown included) runs the same way,
//! through [`Namespace::run`].
//!
//! A NAME is `/run/netns/NAME`, as `ip netns` names them; a missing one is
//! created the way `ip netns add` does it (iproute2 `netns_add`): the
//! folder `/run/netns` made a shared mount point (so that the name shows in
//! mount namespaces created later), an empty file, and a thread that
//! `unshare(CLONE_NEWNET)`s and bind-mounts its `/proc/thread-self/ns/net`
//! on the file. A namespace tcpd created it removes at exit (as
//! `ip netns del`: lazy unmount, unlink); the namespace itself ends when its
//! last user (tcpd's TUN fd, a process inside) is gone. A PATH is any nsfs
//! file, e.g. `/proc/PID/ns/net` of a container's process.

use crate::error::Error;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use tracing::{debug, info, warn};

/// Where `ip netns` keeps the names of network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// What `--netns` names: a name under [`NETNS_RUN_DIR`] or a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetnsTarget {
    /// `/run/netns/NAME`; created (and removed at exit) if missing.
    Name(String),
    /// Any nsfs file (`/proc/PID/ns/net`, `/run/netns/x`); must exist.
    Path(PathBuf),
}

impl NetnsTarget {
    /// Parses `--netns`'s value: anything with a `/` is a path, the rest a
    /// name as `ip netns add` takes it (not empty, not `.` or `..`, at
    /// most 255 bytes, no spaces).
    pub fn parse(s: &str) -> Result<NetnsTarget, String> {
        if s.contains('/') {
            return Ok(NetnsTarget::Path(PathBuf::from(s)));
        }
        if s.is_empty()
            || s == "."
            || s == ".."
            || s.len() > 255
            || s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "'{s}' is not a namespace name (1 to 255 characters, no '/' or spaces, not . or ..) \
                 nor a path"
            ));
        }
        Ok(NetnsTarget::Name(s.to_string()))
    }

    /// The nsfs file this target names.
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsTarget::Name(n) => Path::new(NETNS_RUN_DIR).join(n),
            NetnsTarget::Path(p) => p.clone(),
        }
    }

    /// How a user runs `prog` inside this namespace (for the banner).
    pub fn exec_hint(&self) -> String {
        match self {
            NetnsTarget::Name(n) => format!("ip netns exec {n}"),
            NetnsTarget::Path(p) => format!("nsenter --net={}", p.display()),
        }
    }
}

impl std::fmt::Display for NetnsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetnsTarget::Name(n) => f.write_str(n),
            NetnsTarget::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// An open network namespace: tcpd's handle on the sandbox.
#[derive(Debug)]
pub struct Namespace {
    target: NetnsTarget,
    path: PathBuf,
    file: File,
    /// tcpd created the name (bind mount) and removes it at exit.
    created: bool,
}

/// strerror of `e` without std's " (os error N)".
fn errno_msg(e: Errno) -> String {
    e.desc().to_string()
}

/// An I/O error's text without std's " (os error N)".
fn io_msg(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => errno_msg(Errno::from_raw(code)),
        None => e.to_string(),
    }
}

impl Namespace {
    /// Opens the namespace `target` names; a missing NAME is created (see
    /// the module doc). Errors are one line: no such namespace, not a
    /// network namespace, no permission.
    pub fn open(target: &NetnsTarget) -> Result<Namespace, Error> {
        let path = target.path();
        let mut created = false;
        if let NetnsTarget::Name(name) = target {
            if !path.exists() {
                create(name, &path)?;
                created = true;
            }
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                if created {
                    remove_name(&path);
                }
                return Err(open_error(target, &path, &e));
            }
        };
        let ns = Namespace {
            target: target.clone(),
            path,
            file,
            created,
        };
        // Entering it once checks that it is a network namespace and that
        // tcpd may enter it, before anything is built there.
        if let Err(e) = ns.run(|| ()) {
            let err = enter_error(&ns.target, &ns.path, &e);
            drop(ns);
            return Err(err);
        }
        if created {
            info!(netns = %target, "created network namespace {}", ns.path.display());
        }
        Ok(ns)
    }

    /// Runs `f` on a short-lived thread that entered the namespace; returns
    /// its result, or the error of `setns(2)`. The calling thread stays
    /// where it is. A panic in `f` comes back as an error, not a panic.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let file = &self.file;
        std::thread::scope(|s| {
            let h = std::thread::Builder::new()
                .name("tcpd-netns".into())
                .spawn_scoped(s, move || {
                    setns(file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                    Ok(f())
                })?;
            h.join()
                .map_err(|_| io::Error::other("the namespace thread panicked"))?
        })
    }

    /// What `--netns` said.
    pub fn target(&self) -> &NetnsTarget {
        &self.target
    }

    /// Whether tcpd created this namespace (and so removes it at exit).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The namespace's identity (`net:[INODE]`'s inode): equal for two
    /// files of one namespace.
    pub fn inode(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.file.metadata()?.ino())
    }

    /// Removes the name tcpd created (once; nothing for a namespace tcpd
    /// found). The namespace lives on while something holds it.
    pub fn remove(&mut self) {
        if std::mem::take(&mut self.created) {
            remove_name(&self.path);
            info!(netns = %self.target, "removed network namespace {}", self.path.display());
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `ip netns del` for a name: lazy unmount, then unlink.
fn remove_name(path: &Path) {
    if let Err(e) = umount2(path, MntFlags::MNT_DETACH) {
        debug!("umount {}: {}", path.display(), errno_msg(e));
    }
    if let Err(e) = std::fs::remove_file(path) {
        warn!("cannot remove {}: {e}", path.display());
    }
}

/// Creates the network namespace `name` at `path` as `ip netns add` does.
fn create(name: &str, path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let fail = |what: &str, e: String| {
        let denied = e == errno_msg(Errno::EPERM) || e == errno_msg(Errno::EACCES);
        Error::new(if denied {
            format!(
                "--netns {name}: no permission to create the network namespace ({what}: {e}); \
                 run tcpd as root"
            )
        } else {
            format!("--netns {name}: cannot create the network namespace ({what}: {e})")
        })
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_RUN_DIR)
        .map_err(|e| fail(&format!("mkdir {NETNS_RUN_DIR}"), io_msg(&e)))?;
    // As iproute2: make the folder a shared mount point (bind-mounting it
    // on itself first if it is none), so that names added later propagate
    // to the mount namespaces that copy this one.
    let shared = |dir: &str| {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared(NETNS_RUN_DIR) {
        Ok(()) => {}
        Err(Errno::EINVAL) => {
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| fail(&format!("bind {NETNS_RUN_DIR}"), errno_msg(e)))?;
            shared(NETNS_RUN_DIR)
                .map_err(|e| fail(&format!("share {NETNS_RUN_DIR}"), errno_msg(e)))?;
        }
        Err(e) => return Err(fail(&format!("share {NETNS_RUN_DIR}"), errno_msg(e))),
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(path)
        .map_err(|e| fail(&format!("create {}", path.display()), io_msg(&e)))?;
    // A thread of its own gets the new namespace (unshare moves only the
    // calling thread) and pins it with the bind mount, then ends.
    let made = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("tcpd-netns-add".into())
            .spawn_scoped(s, || -> Result<(), String> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(errno_msg)?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    path,
                    Some("none"),
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(errno_msg)
            })
            .map_err(|e| format!("thread: {e}"))?
            .join()
            .map_err(|_| "the namespace thread panicked".to_string())?
    });
    if let Err(e) = made {
        remove_name(path);
        return Err(fail("unshare and bind mount", e));
    }
    Ok(())
}

/// Why a namespace file cannot be opened, as one line.
fn open_error(target: &NetnsTarget, path: &Path, e: &io::Error) -> Error {
    let p = path.display();
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => Error::new(format!(
            "--netns {target}: no such network namespace ({p} does not exist)"
        )),
        Some(libc::EACCES) | Some(libc::EPERM) => Error::new(format!(
            "--netns {target}: no permission to open {p}; run tcpd as root"
        )),
        _ => Error::new(format!("--netns {target}: cannot open {p}: {}", io_msg(e))),
    }
}

/// Why `setns` refused, as one line.
fn enter_error(target: &NetnsTarget, path: &Path, e: &io::Error) -> Error {
    let p = path.display();
    match e.raw_os_error() {
        // setns(2): EINVAL when the fd is not a namespace of the type asked.
        Some(libc::EINVAL) => Error::new(format!(
            "--netns {target}: {p} is not a network namespace (give a NAME of `ip netns list` \
             or a file like /proc/PID/ns/net){}",
            if matches!(target, NetnsTarget::Name(_)) {
                "; a stale name is removed with `ip netns del`"
            } else {
                ""
            }
        )),
        Some(libc::EPERM) => Error::new(format!(
            "--netns {target}: no permission to enter {p} (needs CAP_SYS_ADMIN); run tcpd as root"
        )),
        _ => Error::new(format!("--netns {target}: cannot enter {p}: {}", io_msg(e))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(
            NetnsTarget::parse("sbx").unwrap(),
            NetnsTarget::Name("sbx".into())
        );
        assert_eq!(
            NetnsTarget::parse("sbx").unwrap().path(),
            PathBuf::from("/run/netns/sbx")
        );
        assert_eq!(
            NetnsTarget::parse("/proc/1/ns/net").unwrap(),
            NetnsTarget::Path("/proc/1/ns/net".into())
        );
        assert_eq!(
            NetnsTarget::parse("./x").unwrap(),
            NetnsTarget::Path("./x".into())
        );
        for bad in ["", ".", "..", "a b", &"x".repeat(256)] {
            assert!(NetnsTarget::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            NetnsTarget::parse("sbx").unwrap().exec_hint(),
            "ip netns exec sbx"
        );
    }

    #[test]
    fn missing_and_wrong_paths_are_one_line() {
        let t = NetnsTarget::parse("/nonexistent/h-netns/ns").unwrap();
        let e = Namespace::open(&t).unwrap_err().to_string();
        assert!(e.contains("no such network namespace"), "{e}");
        // A file that is no namespace at all (and, unprivileged, setns
        // refuses with EPERM first: both are one clear line).
        let t = NetnsTarget::parse("/proc/self/status").unwrap();
        let e = Namespace::open(&t).unwrap_err().to_string();
        assert!(
            e.contains("is not a network namespace") || e.contains("no permission"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn another_kind_of_namespace_is_refused() {
        // The UTS namespace file: nsfs, but not a network namespace.
        let t = NetnsTarget::parse("/proc/self/ns/uts").unwrap();
        let e = Namespace::open(&t).unwrap_err().to_string();
        assert!(
            e.contains("is not a network namespace") || e.contains("no permission"),
            "{e}"
        );
    }

    #[test]
    fn the_own_namespace_can_be_entered_by_root() {
        // The effective uid, second of /proc/self/status's `Uid:` line.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap();
        if euid != "0" {
            return;
        }
        let t = NetnsTarget::parse("/proc/self/ns/net").unwrap();
        let ns = Namespace::open(&t).unwrap();
        assert!(!ns.created());
        assert_eq!(ns.run(|| 7).unwrap(), 7);
        // The caller did not move.
        let me = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(me.ino(), ns.inode().unwrap());
    }
}
