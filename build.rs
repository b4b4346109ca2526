//! Build script of the root package: lists the capture fixtures for
//! `tests/replay.rs`, so that each file in `captures/` is a test case of
//! its own (issue 4: "one test per file, discovered from the folder, so a
//! new fixture needs no code").
//!
//! Writes `$OUT_DIR/replay_fixtures.rs`: one `fixture!(ident, "file");`
//! line per `.pcap` or `.pcapng` file in `captures/`, then
//! `const FIXTURES: &[&str]` with every file name. Cargo reruns it when
//! anything in `captures/` changes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A Rust identifier for a file name: `echo_halfclose.pcap` ->
/// `echo_halfclose_pcap`.
fn ident(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s.insert_str(0, "f_");
    }
    s
}

/// The capture files among the names of `captures/`'s entries (`.pcap`,
/// `.pcapng`), sorted. A capture whose name is not UTF-8 is an error: the
/// generated test names its file in a string literal, and a lossy name
/// would point at no file (a test failing with "file not found" while the
/// check that every capture has its test passes).
pub(crate) fn capture_names(
    entries: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for e in entries {
        let is_capture = Path::new(&e)
            .extension()
            .is_some_and(|x| x == "pcap" || x == "pcapng");
        if !is_capture {
            continue;
        }
        match e.into_string() {
            Ok(n) => names.push(n),
            Err(raw) => {
                return Err(format!(
                    "captures/{}: the file name is not UTF-8; rename it (a replay test \
                     cannot name it)",
                    raw.to_string_lossy()
                ))
            }
        }
    }
    names.sort();
    Ok(names)
}

fn main() {
    println!("cargo:rerun-if-changed=captures");
    println!("cargo:rerun-if-changed=build.rs");
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let names: Vec<String> = match std::fs::read_dir(root.join("captures")) {
        Ok(d) => match capture_names(d.filter_map(|e| e.ok()).map(|e| e.file_name())) {
            Ok(n) => n,
            Err(msg) => {
                println!("cargo:warning={msg}");
                eprintln!("error: {msg}");
                std::process::exit(1);
            }
        },
        Err(e) => {
            println!("cargo:warning=captures/: {e}; no replay fixtures");
            Vec::new()
        }
    };
    let mut out = String::new();
    let mut used: Vec<String> = Vec::new();
    for n in &names {
        let mut id = ident(n);
        while used.contains(&id) {
            id.push('_');
        }
        let _ = writeln!(out, "fixture!({id}, {n:?});");
        used.push(id);
    }
    let _ = writeln!(out, "/// Every capture file the tests above were made for.");
    let _ = writeln!(out, "const FIXTURES: &[&str] = &{names:?};");
    let Some(dir) = std::env::var_os("OUT_DIR") else {
        println!("cargo:warning=OUT_DIR is not set");
        std::process::exit(1);
    };
    let path = Path::new(&dir).join("replay_fixtures.rs");
    if let Err(e) = std::fs::write(&path, out) {
        println!("cargo:warning={}: {e}", path.display());
        std::process::exit(1);
    }
}
