//! Live tests of `--netns` and of the outbound policy (`--outbound-mark`,
//! `--outbound-device`): tcpd runs in one namespace the test made, its TUN
//! device in another (the sandbox), and clients in the sandbox reach the
//! stack. Every namespace is the test's own (`h-netns-` in its name) and
//! goes at the end, also on failure. Root only (skipped without, except
//! under `CI=true`).
//!
//! Needs: iproute2 (`ip`), util-linux (`nsenter`), iputils-ping, curl.

#![allow(clippy::unwrap_used)]

mod common;

use common::{live_ok, need_tool, output_within, Netns, Tcpd, TCPD};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The `net:[INODE]` link of a process's network namespace.
fn ns_of_pid(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The `net:[INODE]` of namespace `ns` (what a process inside sees).
fn ns_id(ns: &Netns) -> String {
    let out = ns.run("readlink", &["/proc/self/ns/net"]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `ping` and `curl` from inside `sbx` reach the stack, over IPv4 and IPv6.
fn sandbox_reaches_the_stack(sbx: &Netns) {
    let out = sbx.run("ping", &["-c", "2", "-i", "0.2", "-W", "2", "10.0.0.2"]);
    assert!(
        out.status.success(),
        "ping from the sandbox: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = sbx.run("curl", &["-sS", "-m", "10", "http://10.0.0.2/"]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tcpd"));
    let out = sbx.run("curl", &["-sS", "-m", "10", "http://[fd00::2]/stats"]);
    assert!(
        out.status.success(),
        "curl over IPv6: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn netns_name_holds_the_tun_while_tcpd_stays_out() {
    if !live_ok("netns_name_holds_the_tun_while_tcpd_stays_out") {
        return;
    }
    need_tool("ping", "iputils-ping");
    need_tool("curl", "curl");
    let outer = Netns::new("h-netns-outer");
    let sbx = Netns::new("h-netns-sbx");
    let mut t = Tcpd::start(&outer, &["--netns", &sbx.name, "--default-route"]);
    assert!(
        t.banner
            .iter()
            .any(|l| l.contains(&format!("ip netns exec {} ping", sbx.name))),
        "{:?}",
        t.banner
    );
    // The device is in the sandbox, tcpd is not.
    assert!(sbx.has_link("tun0"));
    assert!(!outer.has_link("tun0"));
    assert_eq!(ns_of_pid(t.pid), ns_id(&outer));
    assert_ne!(ns_of_pid(t.pid), ns_id(&sbx));
    // Everything the sandbox sends goes to the stack.
    let r4 = sbx.ip_out(&["route", "show", "default"]);
    assert!(r4.contains("dev tun0"), "{r4}");
    let r6 = sbx.ip_out(&["-6", "route", "show", "default"]);
    assert!(r6.contains("dev tun0"), "{r6}");
    assert!(outer.ip_out(&["route", "show", "default"]).is_empty());
    sandbox_reaches_the_stack(&sbx);
    // Elsewhere than the stack's address: to tcpd too (it answers RST
    // for a port nothing listens on, or drops an address not its own:
    // either way the SYN reached the TUN, counted in /stats).
    let before = common::stat(&sbx.stats(), "dev_rx_packets").unwrap();
    let _ = sbx.run("curl", &["-sS", "-m", "1", "http://198.51.100.7/"]);
    let after = common::stat(&sbx.stats(), "dev_rx_packets").unwrap();
    assert!(after >= before + 2, "{before} -> {after}");
    assert!(t.stop(Duration::from_secs(10)).success(), "{}", t.stderr());
    // A namespace tcpd found stays; the device tcpd made there goes.
    assert!(!sbx.has_link("tun0"));
    assert!(std::path::Path::new(&format!("/run/netns/{}", sbx.name)).exists());
}

#[test]
fn netns_path_of_a_process() {
    if !live_ok("netns_path_of_a_process") {
        return;
    }
    need_tool("ping", "iputils-ping");
    need_tool("curl", "curl");
    let outer = Netns::new("h-netns-outer");
    let sbx = Netns::new("h-netns-proc");
    // A process in the sandbox, as a container runtime would have it.
    let holder = common::ChildGuard(sbx.command("sleep").arg("60").spawn().unwrap());
    let path = format!("/proc/{}/ns/net", holder.0.id());
    // `ip netns exec` execs sleep: wait until the PID is in the sandbox.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while ns_of_pid(holder.0.id()) != ns_id(&sbx) {
        assert!(
            std::time::Instant::now() < until,
            "sleep never entered the sandbox"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut t = Tcpd::start(&outer, &["--netns", &path]);
    assert!(
        t.banner
            .iter()
            .any(|l| l.contains(&format!("nsenter --net={path}"))),
        "{:?}",
        t.banner
    );
    assert!(sbx.has_link("tun0"));
    assert_eq!(ns_of_pid(t.pid), ns_id(&outer));
    sandbox_reaches_the_stack(&sbx);
    // No --default-route: none was added.
    assert!(sbx.ip_out(&["route", "show", "default"]).is_empty());
    assert!(t.stop(Duration::from_secs(10)).success(), "{}", t.stderr());
    assert!(!sbx.has_link("tun0"));
}

/// tcpd started in `outer` by `nsenter --net` (so that, as for a user's
/// tcpd, the namespace name it mounts is in the test's mount namespace,
/// not in the private one `ip netns exec` makes).
fn start_in(outer: &Netns, args: &[&str]) -> Tcpd {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", outer.name))
        .arg("--")
        .arg(TCPD)
        .arg("tun0")
        .args(args)
        .env("RUST_LOG", "info");
    Tcpd::spawn(cmd)
}

/// A name for a namespace tcpd is to create; `ip netns del` on drop in
/// case the test fails before tcpd removed it.
fn new_name(purpose: &str) -> Netns {
    let name = format!(
        "tcpd-h-netns-{purpose}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    Netns { name }
}

#[test]
fn netns_new_name_is_created_and_removed_at_exit() {
    if !live_ok("netns_new_name_is_created_and_removed_at_exit") {
        return;
    }
    need_tool("nsenter", "util-linux");
    need_tool("ping", "iputils-ping");
    need_tool("curl", "curl");
    let outer = Netns::new("h-netns-outer");
    let sbx = new_name("new");
    let file = format!("/run/netns/{}", sbx.name);
    assert!(!std::path::Path::new(&file).exists());
    let mut t = start_in(&outer, &["--netns", &sbx.name, "--default-route"]);
    assert!(
        t.stderr().contains("created network namespace"),
        "{}",
        t.stderr()
    );
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains(&sbx.name));
    // A new namespace: loopback up, the device configured.
    let lo = sbx.ip_out(&["link", "show", "lo"]);
    assert!(lo.contains(",UP"), "{lo}");
    assert_eq!(ns_of_pid(t.pid), ns_id(&outer));
    assert_ne!(ns_of_pid(t.pid), ns_id(&sbx));
    sandbox_reaches_the_stack(&sbx);
    assert!(t.stop(Duration::from_secs(10)).success(), "{}", t.stderr());
    assert!(
        !std::path::Path::new(&file).exists(),
        "{file} outlived tcpd"
    );
    assert!(t.stderr().contains("removed network namespace"));
    // Gone already: nothing for the guard to delete.
    std::mem::forget(sbx);
}

#[test]
fn netns_new_name_is_removed_on_a_forced_exit() {
    if !live_ok("netns_new_name_is_removed_on_a_forced_exit") {
        return;
    }
    need_tool("nsenter", "util-linux");
    let outer = Netns::new("h-netns-outer");
    let sbx = new_name("forced");
    let file = format!("/run/netns/{}", sbx.name);
    let mut t = start_in(&outer, &["--netns", &sbx.name, "--grace-ms", "20000"]);
    // A client that never closes its side holds the shutdown in its grace
    // period; the second signal ends it at once.
    let mut s = sbx.connect("10.0.0.2:7");
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    t.signal(libc::SIGTERM);
    assert!(t.wait_stderr(&["SIGTERM: closing"], Duration::from_secs(5)));
    t.signal(libc::SIGTERM);
    let st = t.wait(Duration::from_secs(10)).expect("tcpd did not exit");
    assert_eq!(st.code(), Some(130), "{}", t.stderr());
    assert!(
        !std::path::Path::new(&file).exists(),
        "{file} outlived tcpd"
    );
    drop(s);
    std::mem::forget(sbx);
}

/// Runs tcpd in `ns` expecting it to fail; returns its one stderr line.
fn expect_failure(ns: &Netns, args: &[&str]) -> String {
    let out = output_within(
        ns.command(TCPD).args(args).env_remove("RUST_LOG"),
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "tcpd {args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "tcpd {args:?}: want one line, got:\n{err}");
    assert!(!err.contains("panicked"));
    lines[0].to_string()
}

#[test]
fn netns_errors_are_one_line() {
    if !live_ok("netns_errors_are_one_line") {
        return;
    }
    let outer = Netns::new("h-netns-err");
    let e = expect_failure(&outer, &["tun0", "--netns", "/run/netns/h-netns-none/x"]);
    assert!(e.contains("no such network namespace"), "{e}");
    let e = expect_failure(&outer, &["tun0", "--netns", "/proc/self/ns/uts"]);
    assert!(e.contains("is not a network namespace"), "{e}");
    let e = expect_failure(&outer, &["tun0", "--netns", "/etc/hostname"]);
    assert!(e.contains("is not a network namespace"), "{e}");
    // Unprivileged: no permission to enter (or to create) a namespace.
    let bin = common::SharedBinary::tcpd().unwrap_or_else(|e| panic!("{e}"));
    let sbx = Netns::new("h-netns-perm");
    for target in [
        format!("/run/netns/{}", sbx.name),
        "h-netns-perm-new".into(),
    ] {
        let out = outer.within(|| {
            use std::os::unix::process::CommandExt;
            Command::new(&bin.path)
                .args(["tun0", "--netns", &target])
                .uid(65534)
                .gid(65534)
                .env_remove("RUST_LOG")
                .output()
                .unwrap()
        });
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.to_lowercase().contains("permission"), "{err}");
    }
    assert!(!std::path::Path::new("/run/netns/h-netns-perm-new").exists());
    assert!(!sbx.has_link("tun0"));
    // A default route in tcpd's own namespace needs a way out.
    let e = expect_failure(&outer, &["tun0", "--default-route"]);
    assert!(e.contains("--outbound-mark"), "{e}");
}

/// A client namespace `cl` whose real way out is a veth pair to `srv`
/// (10.9.0.1/24 - 10.9.0.2/24, default route via 10.9.0.2), and a server
/// on 203.0.113.5:8080 in `srv` (not on the link: only a default route
/// reaches it) that echoes one byte per connection and counts them.
struct Upstream {
    cl: Netns,
    srv: Netns,
    accepted: Arc<AtomicUsize>,
}

const SERVER: &str = "203.0.113.5:8080";

fn upstream() -> Upstream {
    let cl = Netns::new("h-netns-cl");
    let srv = Netns::new("h-netns-srv");
    cl.ip(&[
        "link", "add", "o0", "type", "veth", "peer", "name", "s0", "netns", &srv.name,
    ]);
    cl.ip(&["addr", "add", "10.9.0.1/24", "dev", "o0"]);
    cl.ip(&["link", "set", "o0", "up"]);
    srv.ip(&["addr", "add", "10.9.0.2/24", "dev", "s0"]);
    srv.ip(&["link", "set", "s0", "up"]);
    srv.ip(&["addr", "add", "203.0.113.5/32", "dev", "lo"]);
    cl.ip(&[
        "route", "add", "default", "via", "10.9.0.2", "metric", "100",
    ]);
    // Replies to a marked socket arrive unmarked: a strict reverse-path
    // filter would drop them (see daemon::outbound); loose, as documented.
    for key in ["all", "o0"] {
        let out = cl.run(
            "sysctl",
            &["-qw", &format!("net.ipv4.conf.{key}.rp_filter=2")],
        );
        assert!(out.status.success());
    }
    let listener = srv.within(|| TcpListener::bind(SERVER).unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = accepted.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            n.fetch_add(1, Ordering::SeqCst);
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&b);
            }
        }
    });
    Upstream { cl, srv, accepted }
}

/// From inside `ns`: connects to the server with `policy` applied to the
/// socket, echoes one byte; `Err` if that fails within 2 s.
fn echo_via(ns: &Netns, policy: &daemon::OutboundPolicy) -> Result<(), String> {
    let addr: SocketAddr = SERVER.parse().unwrap();
    ns.within(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        policy.apply(&s).map_err(|e| e.to_string())?;
        s.connect_timeout(&addr.into(), Duration::from_secs(2))
            .map_err(|e| format!("connect: {e}"))?;
        let mut s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"m").map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map_err(|e| format!("read: {e}"))?;
        Ok(())
    })
}

#[test]
fn outbound_mark_keeps_upstream_sockets_off_the_tun() {
    if !live_ok("outbound_mark_keeps_upstream_sockets_off_the_tun") {
        return;
    }
    let up = upstream();
    let rules_before = up.cl.ip_out(&["rule"]);
    let rules6_before = up.cl.ip_out(&["-6", "rule"]);
    // Without tcpd the server is reachable by its default route.
    echo_via(&up.cl, &daemon::OutboundPolicy::default()).unwrap();
    let mut t = Tcpd::start(&up.cl, &["--default-route", "--outbound-mark", "51820"]);
    let rules = up.cl.ip_out(&["rule"]);
    assert!(
        rules.contains("32764:\tfrom all lookup main suppress_prefixlength 0")
            && rules.contains("32765:\tnot from all fwmark 0xca6c lookup 51820"),
        "{rules}"
    );
    assert!(up.cl.ip_out(&["-6", "rule"]).contains("lookup 51820"));
    let table = up.cl.ip_out(&["route", "show", "table", "51820"]);
    assert!(table.contains("default dev tun0"), "{table}");
    // An unmarked socket goes into the TUN (tcpd's stack, which is not
    // 203.0.113.5): it never reaches the server.
    let e = echo_via(&up.cl, &daemon::OutboundPolicy::default()).unwrap_err();
    assert!(e.contains("connect"), "{e}");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    // A socket with tcpd's policy leaves by the real default route.
    let marked = daemon::OutboundPolicy {
        mark: Some(51820),
        device: None,
    };
    echo_via(&up.cl, &marked).unwrap();
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    // The stack itself stays reachable (main's own route for 10.0.0.0/24).
    up.cl.stats();
    assert!(t.stop(Duration::from_secs(10)).success(), "{}", t.stderr());
    // Rules and table as before.
    assert_eq!(up.cl.ip_out(&["rule"]), rules_before);
    assert_eq!(up.cl.ip_out(&["-6", "rule"]), rules6_before);
    assert!(up
        .cl
        .ip_out(&["route", "show", "table", "51820"])
        .is_empty());
    echo_via(&up.cl, &daemon::OutboundPolicy::default()).unwrap();
    drop(up.srv);
}

#[test]
fn outbound_mark_rules_go_on_a_forced_exit() {
    if !live_ok("outbound_mark_rules_go_on_a_forced_exit") {
        return;
    }
    let ns = Netns::new("h-netns-mark2");
    let before = ns.ip_out(&["rule"]);
    let mut t = Tcpd::start(
        &ns,
        &[
            "--default-route",
            "--outbound-mark",
            "4242",
            "--grace-ms",
            "20000",
        ],
    );
    assert!(ns.ip_out(&["rule"]).contains("lookup 4242"));
    let mut s = ns.connect("10.0.0.2:7");
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    t.signal(libc::SIGTERM);
    assert!(t.wait_stderr(&["SIGTERM: closing"], Duration::from_secs(5)));
    t.signal(libc::SIGTERM);
    let st = t.wait(Duration::from_secs(10)).expect("tcpd did not exit");
    assert_eq!(st.code(), Some(130), "{}", t.stderr());
    assert_eq!(ns.ip_out(&["rule"]), before);
    drop(s);
}

#[test]
fn outbound_device_leaves_by_its_interface() {
    if !live_ok("outbound_device_leaves_by_its_interface") {
        return;
    }
    let up = upstream();
    let mut t = Tcpd::start(&up.cl, &[]);
    // The user's routing: everything into the TUN (the lower metric).
    up.cl
        .ip(&["route", "add", "default", "dev", "tun0", "metric", "10"]);
    let e = echo_via(&up.cl, &daemon::OutboundPolicy::default()).unwrap_err();
    assert!(e.contains("connect"), "{e}");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 0);
    let bound = daemon::OutboundPolicy {
        mark: None,
        device: Some("o0".into()),
    };
    echo_via(&up.cl, &bound).unwrap();
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    assert!(t.stop(Duration::from_secs(10)).success(), "{}", t.stderr());
}
