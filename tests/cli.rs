//! The command line: `--help` works and bad flags end in one clear line on
//! stderr and a non-zero exit, never a panic. No root needed: every case
//! here fails before any device is created. Still, nothing is left to that:
//! each run has a timeout (the child is killed by its PID), and under root
//! every run that takes an interface name happens in a fresh network
//! namespace of its own (`unshare -n`), so that a case that got past the
//! checks by mistake could not touch the host's interfaces.

#![allow(clippy::unwrap_used)]

mod common;

use common::{isolated, output_within, TCPD};
use std::process::Command;
use std::time::Duration;

fn output(mut cmd: Command) -> (i32, String, String) {
    let out = output_within(cmd.env_remove("RUST_LOG"), Duration::from_secs(20));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tcpd ARGS` in a network namespace of its own (when root).
fn run(args: &[&str]) -> (i32, String, String) {
    let mut c = isolated(TCPD);
    c.args(args);
    output(c)
}

/// `tcpd ARGS` as is: only for runs that cannot reach a device (help, version).
fn run_plain(args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(TCPD);
    c.args(args);
    output(c)
}

#[test]
fn help_lists_every_flag() {
    let (code, out, err) = run_plain(&["--help"]);
    assert_eq!(code, 0, "{err}");
    // clap wraps help to the terminal's width (100 columns without one), so
    // a default may be split across lines: compare with whitespace collapsed.
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    for flag in [
        "<IFACE>",
        "--addr <IP>",
        "--host-addr <IP/LEN>",
        "--mtu <N>",
        "--no-configure",
        "--echo <PORT>",
        "--discard <PORT>",
        "--http <PORT>",
        "--addr6 <IP>",
        "--host-addr6 <IP/LEN>",
        "--http-root <DIR>",
        "--workers <N>",
        "--pcap <FILE>",
        "--seed <N>",
        "--fault-drop <P>",
        "--fault-dup <P>",
        "--fault-reorder <P>",
        "--fault-delay <MS>",
        "--fault-seed <N>",
        "--fault-corrupt <P>",
        "--grace-ms <MS>",
        "--congestion <ALG>",
        "[default: cubic]",
        "--mem-limit <SIZE>",
        "--recv-buffer-max <SIZE>",
        "--send-buffer-max <SIZE>",
        "--no-ipv6",
        "--no-offload",
        "--verbose",
        "--quiet",
        "[default: 10.0.0.2]",
        "[default: 10.0.0.1/24]",
        "[default: 1500]",
        "ip tuntap add",
    ] {
        assert!(flat.contains(flag), "--help lacks {flag}:\n{out}");
    }
    let (code, out, _) = run_plain(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("tcpd "));
}

#[test]
fn bad_flags_give_one_line_and_fail() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "<IFACE>"),
        (&["tun0", "--bogus"], "--bogus"),
        (&["tun0", "--mtu", "100"], "--mtu"),
        (&["tun0", "--mtu", "abc"], "--mtu"),
        (&["tun0", "--addr", "10.0.0.300"], "--addr"),
        (&["tun0", "--host-addr", "10.0.0.1/40"], "prefix"),
        (&["tun0", "--host-addr", "nonsense"], "not an IP address"),
        (&["tun0", "--fault-drop", "1.5"], "probability"),
        (&["tun0", "--congestion", "vegas"], "vegas"),
        (&["tun0", "--fault-reorder=-0.1"], "--fault-reorder"),
        (&["tun0", "--fault-delay", "999999"], "--fault-delay"),
        (&["tun0", "--workers", "1000"], "--workers"),
        (&["tun0", "--reactor-nice", "-30"], "--reactor-nice"),
        (&["tun0", "--echo", "70000"], "--echo"),
        (&["tun0", "--mem-limit", "lots"], "not a size"),
        (&["tun0", "--mem-limit", "1K"], "out of range 64K..=1T"),
        (&["tun0", "--mem-limit", "99999999G"], "out of range"),
        (&["tun0", "--recv-buffer-max", "lots"], "not a size"),
        (&["tun0", "--send-buffer-max", "2G"], "send_buffer_max"),
        (&["tun0", "-v", "-q"], "cannot be used with"),
        // Caught by the configuration check, before any device is touched.
        (
            &["tun0", "--addr", "192.168.77.2"],
            "not inside --host-addr",
        ),
        (&["tun0", "--addr", "10.0.0.1"], "same address"),
        (&["tun0", "--echo", "80"], "same port"),
        (&["bad/name", "--seed", "1"], "invalid interface name"),
        (
            &["tun0", "--http-root", "/nonexistent/tcpd-test-dir"],
            "not a directory",
        ),
        (&["tcpdnope9", "--no-configure"], "does not exist"),
    ];
    for (args, want) in cases {
        let (code, out, err) = run(args);
        assert_ne!(code, 0, "tcpd {args:?} succeeded: {out}{err}");
        assert!(!err.contains("panicked"), "tcpd {args:?} panicked: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "tcpd {args:?}: want one line on stderr, got:\n{err}"
        );
        assert!(lines[0].starts_with("tcpd: "), "tcpd {args:?}: {err}");
        assert!(
            lines[0].contains(want),
            "tcpd {args:?}: want {want:?} in {err}"
        );
        assert!(out.is_empty(), "tcpd {args:?} printed to stdout: {out}");
    }
}

#[test]
fn no_configure_names_the_fix() {
    let (code, _, err) = run(&["tcpdnope8", "--no-configure"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("sudo ip tuntap add tcpdnope8 mode tun user $USER"),
        "{err}"
    );
}

/// The long flags `tcpd --help` lists.
fn help_flags() -> Vec<String> {
    let (code, out, err) = run_plain(&["--help"]);
    assert_eq!(code, 0, "{err}");
    let mut flags: Vec<String> = out
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches([',', '.', ';', ')']).to_string())
        .filter(|w| w.len() > 2 && w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

#[test]
fn readme_lists_every_flag() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let flags = help_flags();
    assert!(flags.len() > 20, "too few flags found in --help: {flags:?}");
    for f in flags {
        if f == "--help" || f == "--version" {
            continue;
        }
        assert!(readme.contains(&f), "README.md does not mention {f}");
    }
}

#[test]
fn a_hung_run_is_killed_by_the_timeout() {
    // The guard the cases above rely on: a child that does not finish is
    // killed, and the test fails instead of hanging.
    let r = std::panic::catch_unwind(|| {
        let mut c = Command::new("sleep");
        c.arg("30");
        output_within(&mut c, Duration::from_millis(300))
    });
    assert!(r.is_err(), "a 30 s sleep finished within 300 ms");
}

/// Bad `--upstream` URLs end in one line that says what is wrong, a
/// non-zero exit, and never the password.
#[test]
fn bad_upstream_urls_give_one_line_without_the_password() {
    let long = format!("socks5://alice:{}@127.0.0.1:1080", "p".repeat(256));
    let cases: &[(&str, &str)] = &[
        ("http://alice:pw-secret@127.0.0.1:1080", "only socks5://"),
        ("socks5://alice:pw-secret@127.0.0.1", "HOST:PORT"),
        ("socks5://alice:pw-secret@127.0.0.1:0", "not a port"),
        (
            "socks5://alice:pw-secret@bad_host!:1080",
            "neither an IP address nor a host name",
        ),
        ("socks5://alice:pw-secret@fd00::5:1080", "brackets"),
        ("socks5://alice@127.0.0.1:1080", "USER:PASS"),
        (&long, "256 bytes, more than the 255"),
        (
            "socks5://alice:pw-secret@no-such-host.invalid:1080",
            "no-such-host.invalid",
        ),
    ];
    for (url, want) in cases {
        let args = ["tun0", "--forward", "8080=127.0.0.1:80", "--upstream", url];
        let (code, out, err) = run(&args);
        assert_ne!(code, 0, "{url}: succeeded: {out}{err}");
        assert!(!err.contains("panicked"), "{url}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{url}: want one line, got:\n{err}");
        assert!(lines[0].starts_with("tcpd: "), "{url}: {err}");
        assert!(lines[0].contains(want), "{url}: want {want:?} in {err}");
        assert!(
            !err.contains("pw-secret") && !err.contains("ppppp"),
            "{url}: the password shows: {err}"
        );
    }
    // Without anything to carry, --upstream is a mistake.
    let (code, _, err) = run(&["tun0", "--upstream", "socks5://127.0.0.1:1080"]);
    assert_ne!(code, 0);
    assert!(err.contains("add one of them"), "{err}");
    // --help names the flag but holds no password.
    let (_, help, _) = run_plain(&["--help"]);
    assert!(
        help.contains("--upstream <socks5://[USER:PASS@]HOST:PORT>"),
        "{help}"
    );
}
