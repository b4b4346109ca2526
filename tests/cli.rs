//! The command line: `--help` works and bad flags end in one clear line on
//! stderr and a non-zero exit, never a panic. No root needed: every case
//! here fails before any device is opened.

#![allow(clippy::unwrap_used)]

use std::process::Command;

const TCPD: &str = env!("CARGO_BIN_EXE_tcpd");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(TCPD)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_flag() {
    let (code, out, err) = run(&["--help"]);
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
        "--grace-ms <MS>",
        "[default: 10.0.0.2]",
        "[default: 10.0.0.1/24]",
        "[default: 1500]",
        "ip tuntap add",
    ] {
        assert!(flat.contains(flag), "--help lacks {flag}:\n{out}");
    }
    let (code, out, _) = run(&["--version"]);
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
        (&["tun0", "--fault-reorder=-0.1"], "--fault-reorder"),
        (&["tun0", "--fault-delay", "999999"], "--fault-delay"),
        (&["tun0", "--workers", "1000"], "--workers"),
        (&["tun0", "--echo", "70000"], "--echo"),
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
