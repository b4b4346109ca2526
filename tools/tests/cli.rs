//! The tools' command lines, run as a user would.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

const REPLAY: &str = env!("CARGO_BIN_EXE_tcpd-replay");

fn fixture(name: &str) -> String {
    format!("{}/../captures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `tcpd-replay show FILE | head` ends quietly when the reader goes away
/// (SIGPIPE, as Unix tools do): no panic about a broken pipe on stderr.
#[test]
fn show_into_a_closed_pipe_ends_quietly() {
    let mut child = Command::new(REPLAY)
        .args(["show", &fixture("http_download.pcap")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpd-replay");
    // Close the read end before the trace is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for tcpd-replay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "tcpd-replay panicked: {err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "expected an exit by SIGPIPE, got {:?}: {err}",
        out.status
    );
}

/// A file that is not there: one line naming it, exit status 2.
#[test]
fn missing_capture_is_one_clear_line() {
    let out = Command::new(REPLAY)
        .args(["check", "/nonexistent/x.pcap"])
        .output()
        .expect("run tcpd-replay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("tcpd-replay: "), "{err}");
    assert!(err.contains("/nonexistent/x.pcap"), "{err}");
}
