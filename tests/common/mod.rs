//! Helpers for live tests: network namespaces that remove themselves, a
//! tcpd process that is killed (by its own PID) if a test panics, sockets
//! opened from inside a namespace.
//!
//! Every packet of a live test stays inside a namespace the test created.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The tcpd binary under test.
pub const TCPD: &str = env!("CARGO_BIN_EXE_tcpd");

/// Whether live tests can run. Without root they are skipped (with a note),
/// except under `CI=true`, where a missing root fails the test.
pub fn live_ok(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{test}: live tests need root (network namespaces, TUN); CI=true requires them to run"
        );
    }
    // Straight to stderr, past the test harness's capture, so it shows.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{test}: SKIPPED: live tests need root (ip netns, /dev/net/tun); run them with sudo"
    );
    false
}

/// A copy of the tcpd binary that another user (uid 65534 in the tests that
/// drop privileges) can execute, in a scratch folder removed on drop.
///
/// The binary under test lives in the clone's `target/`, and a clone inside
/// a 0700 folder (`/root`, any `mktemp -d`) cannot be entered by another
/// uid: `execve` fails with `EACCES` before tcpd runs. The copy goes to the
/// first of `$TMPDIR` and `/tmp` whose every ancestor is searchable by
/// others. Returns why when none is.
pub struct SharedBinary {
    dir: std::path::PathBuf,
    /// Path of the world-executable copy.
    pub path: std::path::PathBuf,
}

impl SharedBinary {
    /// Copies [`TCPD`] (mode 0755, in a folder of mode 0755).
    pub fn tcpd() -> Result<SharedBinary, String> {
        use std::os::unix::fs::PermissionsExt;
        let mut tried = Vec::new();
        let mut bases = vec![std::env::temp_dir()];
        if bases[0] != std::path::Path::new("/tmp") {
            bases.push("/tmp".into());
        }
        for base in bases {
            if let Some(blocker) = base.ancestors().find(|a| {
                std::fs::metadata(a).map_or(true, |m| m.permissions().mode() & 0o001 == 0)
            }) {
                tried.push(format!(
                    "{} is not searchable by other users",
                    blocker.display()
                ));
                continue;
            }
            let dir = base.join(format!(
                "tcpd-shared-bin-{}-{}",
                std::process::id(),
                rand_suffix()
            ));
            let made = std::fs::create_dir(&dir).and_then(|()| {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            });
            if let Err(e) = made {
                tried.push(format!("cannot make {}: {e}", dir.display()));
                continue;
            }
            let path = dir.join("tcpd");
            // A hard link opens no file for writing. A copy does, and a test
            // thread that forks while the copy's fd is open hands it to its
            // child until that child execs: meanwhile `execve` of the copy
            // fails with ETXTBSY ("Text file busy"). `wait_executable`
            // waits that out.
            let copied = std::fs::hard_link(TCPD, &path)
                .and_then(|()| {
                    let mode = std::fs::metadata(&path)?.permissions().mode();
                    if mode & 0o005 == 0o005 {
                        Ok(())
                    } else {
                        std::fs::remove_file(&path)?;
                        Err(std::io::Error::other("not world-executable"))
                    }
                })
                .or_else(|_| {
                    std::fs::copy(TCPD, &path).and_then(|_| {
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    })
                })
                .and_then(|()| wait_executable(&path));
            match copied {
                Ok(()) => return Ok(SharedBinary { dir, path }),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    tried.push(format!("cannot copy {TCPD} to {}: {e}", path.display()));
                }
            }
        }
        Err(format!(
            "no folder where another user may run a copy of tcpd: {}",
            tried.join("; ")
        ))
    }
}

/// Runs `path --help` until it no longer fails with ETXTBSY (see
/// [`SharedBinary::tcpd`]); up to 5 s.
fn wait_executable(path: &std::path::Path) -> std::io::Result<()> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match Command::new(path).arg("--help").output() {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Drop for SharedBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Requires an external tool (e.g. `ping`, `curl`); fails with the package to install.
pub fn need_tool(tool: &str, package: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{tool} not found: install it (apt-get install {package})"
    );
}

fn rand_suffix() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    u32::from_le_bytes(b)
}

/// A network namespace, deleted on drop (also when the test panics).
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates `tcpd-<purpose>-<pid>-<random>` with loopback up.
    pub fn new(purpose: &str) -> Netns {
        let name = format!(
            "tcpd-{purpose}-{}-{:08x}",
            std::process::id(),
            rand_suffix()
        );
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap_or_else(|e| panic!("cannot run `ip` ({e}): install iproute2"));
        assert!(st.success(), "ip netns add {name} failed");
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip -n NS ARGS`, asserting success.
    pub fn ip(&self, args: &[&str]) {
        self.ip_out(args);
    }

    /// A command run inside the namespace (`ip netns exec NS PROG ARGS`).
    pub fn command(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    /// Runs `prog args` inside the namespace and returns its output.
    pub fn run(&self, prog: &str, args: &[&str]) -> Output {
        self.command(prog)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {prog} in {}: {e}", self.name))
    }

    /// Runs `f` on a fresh thread that entered the namespace; sockets it
    /// creates belong to the namespace wherever they are used later.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).unwrap();
                // SAFETY: setns on a valid namespace fd affects only this thread.
                let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// Connects to `addr` from inside the namespace, retrying for up to 5 s
    /// while the daemon starts.
    pub fn connect(&self, addr: &str) -> TcpStream {
        let addr: SocketAddr = addr.parse().unwrap();
        self.within(|| {
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(s) => {
                        // No test may hang on a stalled stream.
                        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
                        return s;
                    }
                    Err(e) if Instant::now() < until => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => panic!("connect {addr}: {e}"),
                }
            }
        })
    }

    /// `ip -n NS ARGS`'s stdout (asserting success).
    pub fn ip_out(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip` ({e}): install iproute2"));
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// tcpd's `/stats` JSON, fetched with curl from inside the namespace.
    pub fn stats(&self) -> String {
        let out = self.run("curl", &["-sS", "-m", "10", "http://10.0.0.2/stats"]);
        assert!(
            out.status.success(),
            "curl /stats: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether an interface exists in the namespace.
    pub fn has_link(&self, iface: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", iface])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A running tcpd inside a namespace; killed on drop if still running.
pub struct Tcpd {
    child: Option<Child>,
    /// Its PID (that of `ip netns exec`, which execs tcpd).
    pub pid: u32,
    /// The banner tcpd printed on stdout, line by line.
    pub banner: Vec<String>,
    stdout: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Tcpd {
    /// Starts `tcpd tun0 ARGS` in `ns` (RUST_LOG=info, or $TCPD_LOG) and
    /// waits for its banner.
    pub fn start(ns: &Netns, args: &[&str]) -> Tcpd {
        let log = std::env::var("TCPD_LOG").unwrap_or_else(|_| "info".into());
        Tcpd::start_with_log(ns, args, Some(&log))
    }

    /// Like [`Tcpd::start`] with RUST_LOG set to `log`, or unset (so that
    /// `-q`/`-v` decide) with `None`.
    pub fn start_with_log(ns: &Netns, args: &[&str], log: Option<&str>) -> Tcpd {
        let mut cmd = ns.command(TCPD);
        cmd.arg("tun0").args(args);
        match log {
            Some(l) => cmd.env("RUST_LOG", l),
            None => cmd.env_remove("RUST_LOG"),
        };
        Tcpd::spawn(cmd)
    }

    /// Starts tcpd as `cmd` says (its program, arguments, namespace) and
    /// waits for its banner.
    pub fn spawn(mut cmd: Command) -> Tcpd {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {TCPD}: {e}"));
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if std::env::var("TCPD_TEST_ECHO").is_ok() {
                    eprintln!("[tcpd] {line}");
                }
                let mut s = sink.lock().unwrap();
                if s.len() < 1 << 20 {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let mut t = Tcpd {
            child: Some(child),
            pid,
            banner: Vec::new(),
            stdout: rx,
            stderr,
        };
        t.wait_banner();
        t
    }

    fn wait_banner(&mut self) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match self.stdout.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("stop with") => {
                    self.banner.push(line);
                    return;
                }
                Ok(line) => self.banner.push(line),
                Err(_) => {
                    if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                        panic!("tcpd exited early ({st}): {}", self.stderr());
                    }
                    assert!(
                        Instant::now() < until,
                        "tcpd did not print its banner in 10 s: {}",
                        self.stderr()
                    );
                }
            }
        }
    }

    /// Everything tcpd wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `limit` for stderr to contain every string of `want`.
    pub fn wait_stderr(&self, want: &[&str], limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            let err = self.stderr();
            if want.iter().all(|w| err.contains(w)) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to tcpd (only to its own PID).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) to the PID of the child we spawned.
        unsafe { libc::kill(self.pid as i32, sig) };
    }

    /// tcpd's resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Waits up to `limit` for tcpd to exit.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for a clean exit (status 0) within `limit`.
    pub fn stop(&mut self, limit: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let st = self.wait(limit);
        st.unwrap_or_else(|| {
            panic!(
                "tcpd did not exit within {limit:?} of SIGTERM: {}",
                self.stderr()
            )
        })
    }
}

impl Drop for Tcpd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `r.read(buf)`, retried on `Interrupted`: a socket with a receive
/// timeout returns EINTR for any interruption (even a stop and continue of
/// the test process), which says nothing about the stream.
pub fn read_some(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Byte `i` of the `/bytes/N` body and of the test patterns.
pub fn pattern(start: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = ((start + k as u64) % 251) as u8;
    }
}

/// Checks that `buf` continues the pattern at `start`; returns the first bad offset.
pub fn check_pattern(start: u64, buf: &[u8]) -> Option<u64> {
    buf.iter()
        .enumerate()
        .find(|(k, b)| **b != ((start + *k as u64) % 251) as u8)
        .map(|(k, _)| start + k as u64)
}

/// Sends an HTTP/1.1 GET and returns the stream positioned at the body,
/// with the status code and the Content-Length.
pub fn http_get(mut s: TcpStream, path: &str) -> (BufReader<TcpStream>, u16, Option<u64>) {
    use std::io::Write;
    // No test may hang: a stalled stream fails the test instead.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: tcpd\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::with_capacity(256 * 1024, s);
    let (code, len) = read_head(&mut r);
    (r, code, len)
}

/// Reads an HTTP/1.1 response head off `r`: the status code and the
/// Content-Length, if any.
pub fn read_head(r: &mut BufReader<TcpStream>) -> (u16, Option<u64>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut len = None;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok();
            }
        }
    }
    (code, len)
}

/// A child process killed (by its own PID) and reaped on drop, if it is
/// still running: no test leaves a process behind when it fails.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Waits up to `limit` for the child to exit.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the child (only to its own PID).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) to the PID of the child we spawned.
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to completion with its output captured, killing it (by its
/// PID) and failing the test if it takes longer than `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let mut guard = ChildGuard(child);
    let status = guard
        .wait(limit)
        .unwrap_or_else(|| panic!("{cmd:?} did not finish within {limit:?}; killed"));
    drop(guard);
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `prog` in a fresh, empty network namespace of its own when the tests
/// run as root (`unshare -n`: it disappears with the process, so nothing
/// it could create touches the host); as is otherwise (then it cannot
/// create devices anyway).
pub fn isolated(prog: &str) -> Command {
    if is_root() {
        let mut c = Command::new("unshare");
        c.args(["-n", "--", prog]);
        c
    } else {
        Command::new(prog)
    }
}

#[allow(unused_imports)] // not every test binary uses it
pub use daemon::testdir::TempDir;

/// The value of counter `key` in tcpd's `/stats` JSON: a top-level number
/// or one in a section, looked up in the document's order (`tcp`, `drops`,
/// `daemon`, ...); `None` if the text is not JSON or has no such number.
pub fn stat(json: &str, key: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let found = v.get(key).and_then(serde_json::Value::as_u64);
    found.or_else(|| {
        ["tcp", "drops", "daemon", "connections", "services"]
            .iter()
            .find_map(|s| v.get(s)?.get(key)?.as_u64())
    })
}
