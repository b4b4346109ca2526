//! Live tests of forwarding (`--forward`, `--transparent`): real programs on
//! both ends (iperf3, curl, python's http.server, nc, sha256sum) and the
//! kernel's TCP, with tcpd in between on a TUN device, all inside network
//! namespaces the tests create and remove (also on failure).
//!
//! The common layout: one namespace holds the TUN device (the kernel side
//! 10.0.0.1, tcpd's stack 10.0.0.2), the client, tcpd and its upstream
//! servers on loopback; a client's connection to 10.0.0.2:PORT crosses the
//! TUN into tcpd's stack and leaves tcpd from a kernel socket to
//! 127.0.0.1:PORT. The built-in HTTP service stays on port 80 for `/stats`.
//!
//! Needs: iproute2, curl, iperf3, python3, netcat-openbsd, coreutils.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    live_ok, need_tool, output_within, pattern, read_some, ChildGuard, Netns, Tcpd, TempDir,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MB: usize = 1 << 20;

/// A forward rule's counter from `/stats` (`forwards.RULE.NAME`).
fn fwd_stat(ns: &Netns, rule: &str, name: &str) -> u64 {
    let js = ns.stats();
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    v["forwards"][rule][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no forwards.{rule}.{name} in {js}"))
}

/// Waits (up to 10 s: `/stats` is refreshed four times a second) until the
/// forward counter `rule`.`name` is `want`.
#[track_caller]
fn expect_fwd(ns: &Netns, rule: &str, name: &str, want: u64) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let got = fwd_stat(ns, rule, name);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < until,
            "forwards.{rule}.{name} is {got}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits up to 10 s for `f` to hold, polling.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `prog args` in `ns` in the background (killed on drop).
fn spawn_in(ns: &Netns, prog: &str, args: &[&str]) -> ChildGuard {
    let child = ns
        .command(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {prog}: {e}"));
    ChildGuard(child)
}

/// Waits until something listens on TCP `port` in `ns`.
fn wait_listen(ns: &Netns, port: u16) {
    let filter = format!("sport = :{port}");
    eventually(&format!("a listener on port {port}"), || {
        let out = ns.run("ss", &["-Hltn", &filter]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    });
}

/// A TCP listener made inside `ns`.
fn listen_in(ns: &Netns, addr: &str) -> TcpListener {
    let a: SocketAddr = addr.parse().unwrap();
    ns.within(|| TcpListener::bind(a).unwrap())
}

/// A connection from inside `ns`, once, with the error if it fails.
fn try_connect(ns: &Netns, addr: &str, limit: Duration) -> std::io::Result<TcpStream> {
    let a: SocketAddr = addr.parse().unwrap();
    ns.within(|| TcpStream::connect_timeout(&a, limit))
}

/// Closes `s` with a RST (SO_LINGER 0).
fn reset(s: TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on the socket's valid fd with a linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

fn raise_nofile(n: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        if r.rlim_cur < n {
            r.rlim_cur = n.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Writes `n` pattern bytes to `w`.
fn write_pattern(w: &mut impl Write, n: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0usize;
    while sent < n {
        let k = buf.len().min(n - sent);
        pattern(sent as u64, &mut buf[..k]);
        w.write_all(&buf[..k]).unwrap();
        sent += k;
    }
}

/// Reads `r` to its end, checking the pattern; returns the byte count.
fn read_pattern(r: &mut impl Read) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    loop {
        let n = read_some(r, &mut buf).unwrap();
        if n == 0 {
            return got;
        }
        assert_eq!(
            common::check_pattern(got as u64, &buf[..n]),
            None,
            "pattern broken"
        );
        got += n;
    }
}

/// The `sum_received.bytes` and bits/s of an iperf3 `-J` report.
fn iperf_received(json: &[u8]) -> (u64, f64) {
    let v: serde_json::Value = serde_json::from_slice(json)
        .unwrap_or_else(|e| panic!("iperf3 -J: {e}: {}", String::from_utf8_lossy(json)));
    assert!(v.get("error").is_none(), "iperf3: {}", v["error"]);
    let r = &v["end"]["sum_received"];
    (
        r["bytes"].as_u64().unwrap_or(0),
        r["bits_per_second"].as_f64().unwrap_or(0.0),
    )
}

// ---------------------------------------------------------------------
// 1. Real programs through --forward

#[test]
fn forward_iperf3_both_directions_and_parallel() {
    if !live_ok("forward_iperf3_both_directions_and_parallel") {
        return;
    }
    need_tool("iperf3", "iperf3");
    let ns = Netns::new("hfwd-iperf");
    let _srv = spawn_in(&ns, "iperf3", &["-s", "-B", "127.0.0.1", "-p", "5201"]);
    wait_listen(&ns, 5201);
    let t = Tcpd::start(&ns, &["--forward", "5201=127.0.0.1:5201"]);
    let rule = "5201=127.0.0.1:5201";
    let mut total = 0u64;
    for extra in [
        &[][..],
        &["-R"][..],
        &["-P", "4"][..],
        &["-P", "4", "-R"][..],
    ] {
        let mut cmd = ns.command("iperf3");
        cmd.args(["-c", "10.0.0.2", "-p", "5201", "-t", "2", "-J"])
            .args(extra);
        let out = output_within(&mut cmd, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "iperf3 {extra:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let (bytes, bps) = iperf_received(&out.stdout);
        eprintln!(
            "iperf3 through --forward {extra:?}: {:.2} Gbit/s",
            bps / 1e9
        );
        assert!(bytes > 10 * MB as u64, "{extra:?}: only {bytes} bytes");
        total += bytes;
    }
    // Each run: a control connection plus one or four data streams.
    eventually("the counters caught up", || {
        fwd_stat(&ns, rule, "bytes_to_upstream") + fwd_stat(&ns, rule, "bytes_from_upstream")
            >= total
    });
    assert!(fwd_stat(&ns, rule, "accepted") >= 2 + 2 + 5 + 5);
    let moved =
        fwd_stat(&ns, rule, "bytes_to_upstream") + fwd_stat(&ns, rule, "bytes_from_upstream");
    assert!(
        moved >= total,
        "counted {moved} bytes, iperf3 received {total}"
    );
    eventually("every forwarded connection closed", || {
        fwd_stat(&ns, rule, "open") == 0
    });
    drop(t);
}

#[test]
fn forward_curl_to_http_servers_v4_and_v6_by_address() {
    if !live_ok("forward_curl_to_http_servers_v4_and_v6_by_address") {
        return;
    }
    need_tool("python3", "python3");
    let dir = TempDir::new("hfwd-www");
    let mut blob = vec![0u8; 3 * MB + 17];
    pattern(5, &mut blob);
    std::fs::write(dir.0.join("blob"), &blob).unwrap();
    std::fs::write(dir.0.join("v4"), b"four\n").unwrap();
    let dir6 = TempDir::new("hfwd-www6");
    std::fs::write(dir6.0.join("v4"), b"six\n").unwrap();
    let ns = Netns::new("hfwd-curl");
    let d4 = dir.0.to_str().unwrap().to_string();
    let d6 = dir6.0.to_str().unwrap().to_string();
    let _s4 = spawn_in(
        &ns,
        "python3",
        &["-m", "http.server", "-b", "127.0.0.1", "-d", &d4, "8000"],
    );
    let _s6 = spawn_in(
        &ns,
        "python3",
        &["-m", "http.server", "-b", "::1", "-d", &d6, "8001"],
    );
    wait_listen(&ns, 8000);
    wait_listen(&ns, 8001);
    // One port, two rules: by the address the client connected to.
    let _t = Tcpd::start(
        &ns,
        &[
            "--forward",
            "10.0.0.2:8080=127.0.0.1:8000",
            "--forward",
            "[fd00::2]:8080=[::1]:8001",
        ],
    );
    let curl = |url: &str| {
        let out = output_within(
            ns.command("curl").args(["-sS", "-m", "20", "--fail", url]),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(curl("http://10.0.0.2:8080/v4"), b"four\n");
    assert_eq!(curl("http://[fd00::2]:8080/v4"), b"six\n");
    assert!(
        curl("http://10.0.0.2:8080/blob") == blob,
        "the 3 MB file came back different"
    );
    expect_fwd(&ns, "10.0.0.2:8080=127.0.0.1:8000", "accepted", 2);
    expect_fwd(&ns, "[fd00::2]:8080=[::1]:8001", "accepted", 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        fwd_stat(&ns, "10.0.0.2:8080=127.0.0.1:8000", "bytes_from_upstream") > blob.len() as u64
    );
}

/// sha256 of a file, by `sha256sum`.
fn sha256_file(p: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// 100 MB each way through a forward, between `nc` processes, checked with
/// sha256sum; `extra` are more tcpd flags (faults).
fn transfer_100mb_each_way(purpose: &str, extra: &[&str]) {
    need_tool("nc", "netcat-openbsd");
    need_tool("sha256sum", "coreutils");
    let dir = TempDir::new(purpose);
    let file = dir.0.join("data");
    let st = Command::new("head")
        .args(["-c", "100000000", "/dev/urandom"])
        .stdout(std::fs::File::create(&file).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let want = sha256_file(&file);
    let ns = Netns::new(purpose);
    let mut args = vec![
        "--forward",
        "9001=127.0.0.1:9001",
        "--forward",
        "9002=127.0.0.1:9002",
    ];
    args.extend_from_slice(extra);
    let _t = Tcpd::start(&ns, &args);
    let f = file.to_str().unwrap();
    let up_sum = dir.0.join("up.sum");
    let down_sum = dir.0.join("down.sum");
    // Upload: the upstream nc writes what it receives into sha256sum.
    let up = format!("nc -l 127.0.0.1 9001 | sha256sum > {}", up_sum.display());
    let mut up_srv = ChildGuard(ns.command("sh").args(["-c", &up]).spawn().unwrap());
    // Download: the upstream nc sends the file and half-closes (-N).
    let down = format!("nc -N -l 127.0.0.1 9002 < {f}");
    let mut down_srv = ChildGuard(ns.command("sh").args(["-c", &down]).spawn().unwrap());
    wait_listen(&ns, 9001);
    wait_listen(&ns, 9002);
    let t0 = Instant::now();
    let send = format!("nc -N 10.0.0.2 9001 < {f}");
    let out = output_within(
        ns.command("sh").args(["-c", &send]),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "upload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(up_srv
        .wait(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    let up_t = t0.elapsed();
    let t1 = Instant::now();
    let recv = format!("nc -d 10.0.0.2 9002 | sha256sum > {}", down_sum.display());
    let out = output_within(
        ns.command("sh").args(["-c", &recv]),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "download: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(down_srv.wait(Duration::from_secs(60)).is_some());
    let down_t = t1.elapsed();
    let got_up = std::fs::read_to_string(&up_sum).unwrap();
    let got_down = std::fs::read_to_string(&down_sum).unwrap();
    eprintln!(
        "{purpose}: 100 MB up in {:.2} s, down in {:.2} s",
        up_t.as_secs_f64(),
        down_t.as_secs_f64()
    );
    assert!(
        got_up.starts_with(&want),
        "upload arrived different: {got_up} vs {want}"
    );
    assert!(
        got_down.starts_with(&want),
        "download arrived different: {got_down} vs {want}"
    );
    expect_fwd(&ns, "9001=127.0.0.1:9001", "bytes_to_upstream", 100_000_000);
    expect_fwd(
        &ns,
        "9002=127.0.0.1:9002",
        "bytes_from_upstream",
        100_000_000,
    );
    expect_fwd(&ns, "9001=127.0.0.1:9001", "upstream_resets", 0);
    expect_fwd(&ns, "9002=127.0.0.1:9002", "client_resets", 0);
}

#[test]
fn forward_100mb_each_way_sha256() {
    if !live_ok("forward_100mb_each_way_sha256") {
        return;
    }
    transfer_100mb_each_way("hfwd-100mb", &[]);
}

// ---------------------------------------------------------------------
// 2. Refused and unreachable upstreams

#[test]
fn forward_refused_upstream_refuses_the_syn() {
    if !live_ok("forward_refused_upstream_refuses_the_syn") {
        return;
    }
    let ns = Netns::new("hfwd-refused");
    // Nothing listens on 127.0.0.1:9 in the namespace.
    let _t = Tcpd::start(&ns, &["--forward", "7009=127.0.0.1:9"]);
    let e = try_connect(&ns, "10.0.0.2:7009", Duration::from_secs(5))
        .map(|_| ())
        .expect_err("the client saw an accepted connection");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    let rule = "7009=127.0.0.1:9";
    expect_fwd(&ns, rule, "connect_refused", 1);
    expect_fwd(&ns, rule, "accepted", 0);
}

#[test]
fn forward_unreachable_upstream_refused_after_the_connect_timeout() {
    if !live_ok("forward_unreachable_upstream_refused_after_the_connect_timeout") {
        return;
    }
    let ns = Netns::new("hfwd-unreach");
    // 10.77.0.0/24 leads onto a veth link where nobody answers ARP: SYNs
    // never leave (the kernel gives up on the neighbour after ~3 s, later
    // than the 2 s connect timeout). (This kernel has no dummy module.)
    ns.ip(&[
        "link", "add", "hfv0", "type", "veth", "peer", "name", "hfv1",
    ]);
    ns.ip(&["link", "set", "hfv0", "up"]);
    ns.ip(&["link", "set", "hfv1", "up"]);
    ns.ip(&["route", "add", "10.77.0.0/24", "dev", "hfv0"]);
    // 10.78.0.0/24 is unreachable outright (EHOSTUNREACH at connect).
    ns.ip(&["route", "add", "unreachable", "10.78.0.0/24"]);
    let _t = Tcpd::start(
        &ns,
        &[
            "--forward",
            "7010=10.77.0.1:80",
            "--forward",
            "7011=10.78.0.1:80",
            "--connect-timeout",
            "2",
        ],
    );
    let t0 = Instant::now();
    let e = try_connect(&ns, "10.0.0.2:7010", Duration::from_secs(20))
        .map(|_| ())
        .expect_err("a connection to a silent upstream was accepted");
    let waited = t0.elapsed();
    eprintln!("silent upstream: client refused after {waited:?}: {e}");
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::HostUnreachable
        ),
        "{e}"
    );
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(6),
        "refused after {waited:?}, the connect timeout is 2 s"
    );
    expect_fwd(&ns, "7010=10.77.0.1:80", "connect_timeout", 1);
    let t0 = Instant::now();
    let e = try_connect(&ns, "10.0.0.2:7011", Duration::from_secs(20))
        .map(|_| ())
        .expect_err("a connection to an unreachable upstream was accepted");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::HostUnreachable
        ),
        "{e}"
    );
    expect_fwd(&ns, "7011=10.78.0.1:80", "connect_unreachable", 1);
}

// ---------------------------------------------------------------------
// 3. Half-close and reset, each direction

#[test]
fn forward_half_close_each_direction() {
    if !live_ok("forward_half_close_each_direction") {
        return;
    }
    let ns = Netns::new("hfwd-half");
    let l = listen_in(&ns, "127.0.0.1:7020");
    let _t = Tcpd::start(&ns, &["--forward", "7020=127.0.0.1:7020"]);
    // The client closes first: the upstream reads to EOF, then answers.
    let srv = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let got = read_pattern(&mut s);
        write_pattern(&mut s, 2 * MB);
        drop(s);
        // The upstream closes first: it half-closes, then still reads.
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write_pattern(&mut s, 2 * MB);
        s.shutdown(Shutdown::Write).unwrap();
        let late = read_pattern(&mut s);
        (got, late)
    });
    let mut c = ns.connect("10.0.0.2:7020");
    write_pattern(&mut c, 3 * MB);
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_pattern(&mut c), 2 * MB, "the answer after our FIN");
    drop(c);
    let mut c = ns.connect("10.0.0.2:7020");
    assert_eq!(
        read_pattern(&mut c),
        2 * MB,
        "the upstream's bytes before its FIN"
    );
    write_pattern(&mut c, MB);
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = [0u8; 1];
    assert_eq!(read_some(&mut c, &mut rest).unwrap(), 0);
    let (got, late) = srv.join().unwrap();
    assert_eq!(
        got,
        3 * MB,
        "upstream got the client's bytes before its FIN"
    );
    assert_eq!(
        late, MB,
        "upstream got the client's bytes after its own FIN"
    );
    let rule = "7020=127.0.0.1:7020";
    eventually("both closed", || fwd_stat(&ns, rule, "open") == 0);
    expect_fwd(&ns, rule, "client_resets", 0);
    expect_fwd(&ns, rule, "upstream_resets", 0);
}

#[test]
fn forward_reset_each_direction() {
    if !live_ok("forward_reset_each_direction") {
        return;
    }
    let ns = Netns::new("hfwd-rst");
    let l = listen_in(&ns, "127.0.0.1:7030");
    let _t = Tcpd::start(&ns, &["--forward", "7030=127.0.0.1:7030"]);
    let srv = std::thread::spawn(move || {
        // The client resets: the upstream's read fails with ECONNRESET.
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(read_some(&mut s, &mut b).unwrap(), 1);
        let e = read_some(&mut s, &mut b).expect_err("no reset upstream");
        // The upstream resets: the client's read fails.
        let (mut s2, _) = l.accept().unwrap();
        s2.write_all(b"hello").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        reset(s2);
        e.kind()
    });
    let mut c = ns.connect("10.0.0.2:7030");
    c.write_all(b"x").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    reset(c);
    let mut c = ns.connect("10.0.0.2:7030");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    let err = loop {
        match read_some(&mut c, &mut buf) {
            Ok(0) => panic!("a clean EOF instead of a reset; got {got:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(b"hello".starts_with(&got), "{got:?}");
    let upstream_saw = srv.join().unwrap();
    assert_eq!(upstream_saw, std::io::ErrorKind::ConnectionReset);
    let rule = "7030=127.0.0.1:7030";
    expect_fwd(&ns, rule, "client_resets", 1);
    expect_fwd(&ns, rule, "upstream_resets", 1);
}

// ---------------------------------------------------------------------
// 5. Faults, many connections, slow ends

#[test]
fn forward_100mb_each_way_under_faults() {
    if !live_ok("forward_100mb_each_way_under_faults") {
        return;
    }
    transfer_100mb_each_way(
        "hfwd-faults",
        &[
            "--fault-drop",
            "0.01",
            "--fault-reorder",
            "0.01",
            "--fault-seed",
            "7",
        ],
    );
}

const ECHO_PY: &str = r#"
import asyncio, sys
async def echo(r, w):
    try:
        while True:
            d = await r.read(65536)
            if not d:
                break
            w.write(d)
            await w.drain()
    except ConnectionError:
        pass
    w.close()
async def main():
    s = await asyncio.start_server(echo, '127.0.0.1', int(sys.argv[1]), backlog=4096)
    async with s:
        await s.serve_forever()
asyncio.run(main())
"#;

#[test]
fn forward_thousand_concurrent_connections() {
    if !live_ok("forward_thousand_concurrent_connections") {
        return;
    }
    need_tool("python3", "python3");
    raise_nofile(8192);
    let ns = Netns::new("hfwd-1000");
    let _echo = spawn_in(&ns, "python3", &["-c", ECHO_PY, "7040"]);
    wait_listen(&ns, 7040);
    let _t = Tcpd::start(&ns, &["--forward", "7040=127.0.0.1:7040"]);
    let rule = "7040=127.0.0.1:7040";
    let addr: SocketAddr = "10.0.0.2:7040".parse().unwrap();
    let mut conns: Vec<TcpStream> = ns.within(|| {
        (0..1000)
            .map(|i| {
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                s
            })
            .collect()
    });
    for (i, c) in conns.iter_mut().enumerate() {
        let msg = format!("hello {i:04} ").repeat(100);
        c.write_all(msg.as_bytes()).unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let msg = format!("hello {i:04} ").repeat(100);
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes(), "connection {i}");
    }
    expect_fwd(&ns, rule, "open", 1000);
    expect_fwd(&ns, rule, "accepted", 1000);
    drop(conns);
    eventually("all 1000 closed", || fwd_stat(&ns, rule, "open") == 0);
    expect_fwd(&ns, rule, "client_resets", 0);
}

#[test]
fn forward_slow_upstream_and_slow_client_keep_rss_bounded() {
    if !live_ok("forward_slow_upstream_and_slow_client_keep_rss_bounded") {
        return;
    }
    const N: usize = 16;
    let ns = Netns::new("hfwd-slow");
    // The slow upstream accepts and never reads; the fast one writes
    // without end to a client that never reads.
    let slow = listen_in(&ns, "127.0.0.1:7050");
    let fast = listen_in(&ns, "127.0.0.1:7051");
    let t = Tcpd::start(
        &ns,
        &[
            "--forward",
            "7050=127.0.0.1:7050",
            "--forward",
            "7051=127.0.0.1:7051",
        ],
    );
    let before = t.rss_kib();
    let held =
        std::thread::spawn(move || (0..N).map(|_| slow.accept().unwrap().0).collect::<Vec<_>>());
    let writers = std::thread::spawn(move || {
        for _ in 0..N {
            let (mut s, _) = fast.accept().unwrap();
            std::thread::spawn(move || {
                let buf = vec![7u8; 64 * 1024];
                while s.write_all(&buf).is_ok() {}
            });
        }
    });
    let mut pushers = Vec::new();
    for _ in 0..N {
        let mut c = ns.connect("10.0.0.2:7050");
        c.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        pushers.push(std::thread::spawn(move || {
            let buf = vec![9u8; 64 * 1024];
            let mut sent = 0usize;
            while let Ok(n) = c.write(&buf) {
                sent += n;
            }
            (sent, c)
        }));
    }
    let idle: Vec<TcpStream> = (0..N).map(|_| ns.connect("10.0.0.2:7051")).collect();
    let up = held.join().unwrap();
    writers.join().unwrap();
    let mut sent = Vec::new();
    for p in pushers {
        sent.push(p.join().unwrap());
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = t.rss_kib();
    let most = sent.iter().map(|(n, _)| *n).max().unwrap();
    eprintln!(
        "slow ends: tcpd RSS {before} -> {after} KiB with {N} stalled uploads (most sent {most} bytes) and {N} stalled downloads"
    );
    // Each stalled upload stops at the kernel buffers plus tcpd's receive
    // buffer (256 KiB): far below what a client would push unchecked.
    assert!(
        most < 32 * MB,
        "an upload to a stalled upstream took {most} bytes"
    );
    assert!(
        after < before + 48 * 1024,
        "tcpd RSS grew from {before} to {after} KiB with slow ends"
    );
    let rule = "7051=127.0.0.1:7051";
    let from_up = fwd_stat(&ns, rule, "bytes_from_upstream");
    assert!(
        from_up < (N * 2 * MB) as u64,
        "tcpd read {from_up} bytes from upstreams whose clients never read"
    );
    drop((idle, up, sent));
}

// ---------------------------------------------------------------------
// 6. Idle timeout, per-source limit, counters

#[test]
fn forward_idle_timeout_and_per_source_limit() {
    if !live_ok("forward_idle_timeout_and_per_source_limit") {
        return;
    }
    let ns = Netns::new("hfwd-limits");
    let l = listen_in(&ns, "127.0.0.1:7060");
    let _t = Tcpd::start(
        &ns,
        &[
            "--forward",
            "7060=127.0.0.1:7060",
            "--forward-idle-timeout",
            "2",
            "--max-connections-per-source",
            "3",
        ],
    );
    let rule = "7060=127.0.0.1:7060";
    let srv = std::thread::spawn(move || {
        let mut v = Vec::new();
        for _ in 0..3 {
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            v.push(s);
        }
        // The first goes idle: the upstream sees a reset after the timeout.
        let mut b = [0u8; 1];
        let r = read_some(&mut v[0], &mut b);
        (r.map_err(|e| e.kind()), v)
    });
    let mut c: Vec<TcpStream> = (0..3).map(|_| ns.connect("10.0.0.2:7060")).collect();
    // A fourth from the same source is over the limit.
    let e = try_connect(&ns, "10.0.0.2:7060", Duration::from_secs(5))
        .map(|_| ())
        .expect_err("the per-source limit let a fourth connection in");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    // Keep two busy, let the first idle.
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    c[0].set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let busy = std::thread::spawn({
        let mut a = c[1].try_clone().unwrap();
        let mut b = c[2].try_clone().unwrap();
        move || {
            for _ in 0..10 {
                let _ = a.write_all(b"k");
                let _ = b.write_all(b"k");
                std::thread::sleep(Duration::from_millis(400));
            }
        }
    });
    let r = read_some(&mut c[0], &mut buf);
    let waited = t0.elapsed();
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "idle client read: {r:?}"
    );
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(6),
        "reset after {waited:?} with a 2 s idle timeout"
    );
    let (up, _held) = srv.join().unwrap();
    assert_eq!(
        up,
        Err(std::io::ErrorKind::ConnectionReset),
        "upstream of the idle one"
    );
    busy.join().unwrap();
    // /stats from another source address: this one is at its limit.
    ns.ip(&["addr", "add", "10.0.0.3/24", "dev", "tun0"]);
    let out = ns.run(
        "curl",
        &[
            "-sS",
            "-m",
            "10",
            "--interface",
            "10.0.0.3",
            "http://10.0.0.2/stats",
        ],
    );
    let js = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    assert_eq!(
        v["forwards"][rule]["idle_timeouts"], 1,
        "only the idle one: {js}"
    );
    assert!(common::stat(&js, "source_limit").unwrap_or(0) >= 1, "{js}");
    drop(c);
}
