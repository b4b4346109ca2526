//! The fuzz targets of `tcp/fuzz` on stable Rust: the checked-in corpus and
//! the generated seeds replayed as ordinary tests, plus the same target
//! logic under proptest with random and spliced inputs.
//!
//! The target logic lives in `tcp/fuzz/src/lib.rs` and is included here with
//! `#[path]`, so this test and the cargo-fuzz binaries run the same code.
//!
//! To rewrite the seed files after changing the seeds or the input
//! encoding: `TCP_FUZZ_WRITE_SEEDS=1 cargo test -p tcp --test fuzz_corpus`.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod harness;

use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target)
}

/// Every file in the target's corpus directory, sorted by name.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, b)
        })
        .collect()
}

fn write_seeds_if_asked(target: &str, seeds: &[(String, Vec<u8>)]) {
    if std::env::var_os("TCP_FUZZ_WRITE_SEEDS").is_none() {
        return;
    }
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for (name, bytes) in seeds {
        let p = dir.join(format!("seed-{name}"));
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

/// Replays `files` through `f`, naming the file that panics.
fn replay(files: &[(PathBuf, Vec<u8>)], f: fn(&[u8])) {
    for (path, bytes) in files {
        let r = std::panic::catch_unwind(|| f(bytes));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{} failed: {msg}", path.display());
        }
    }
}

/// The checked-in part of a corpus (the `seed-*` files; libFuzzer's own
/// additions are ignored by git) stays small.
fn check_corpus_size(files: &[(PathBuf, Vec<u8>)], target: &str) {
    let seeds: Vec<_> = files
        .iter()
        .filter(|(p, _)| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
        })
        .collect();
    let total: usize = seeds.iter().map(|(_, b)| b.len()).sum();
    assert!(
        seeds.len() >= 20,
        "{target}: only {} seed files",
        seeds.len()
    );
    assert!(total < 1 << 20, "{target}: the seeds take {total} bytes");
}

#[test]
fn parse_packet_corpus() {
    let seeds = harness::parse_packet_seeds();
    write_seeds_if_asked("parse_packet", &seeds);
    let files = corpus("parse_packet");
    check_corpus_size(&files, "parse_packet");
    // Every generated seed is checked in, byte for byte.
    for (name, bytes) in &seeds {
        let p = corpus_dir("parse_packet").join(format!("seed-{name}"));
        let on_disk = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(
            &on_disk,
            bytes,
            "{} is stale: rewrite the seeds",
            p.display()
        );
    }
    replay(&files, harness::parse_packet);
}

#[test]
fn parse_packet_seeds_reach_every_parser() {
    // The seeds are only useful if they get past the first checks.
    use tcp::wire::{parse_icmp_echo, parse_ip, parse_tcp};
    let seeds = harness::parse_packet_seeds();
    let ip_ok = seeds.iter().filter(|(_, b)| parse_ip(b).is_ok()).count();
    let tcp_ok = seeds
        .iter()
        .filter(|(_, b)| parse_ip(b).is_ok_and(|ip| parse_tcp(&ip).is_ok()))
        .count();
    let icmp_ok = seeds
        .iter()
        .filter(|(_, b)| parse_ip(b).is_ok_and(|ip| parse_icmp_echo(&ip).is_ok()))
        .count();
    assert!(ip_ok >= 25, "{ip_ok} seeds parse as IP");
    assert!(tcp_ok >= 15, "{tcp_ok} seeds parse as TCP");
    assert!(icmp_ok >= 2, "{icmp_ok} seeds parse as ICMP echo");
}

#[test]
fn endpoint_corpus() {
    let seeds = harness::endpoint_seeds();
    write_seeds_if_asked("endpoint", &seeds);
    let files = corpus("endpoint");
    check_corpus_size(&files, "endpoint");
    for (name, bytes) in &seeds {
        let p = corpus_dir("endpoint").join(format!("seed-{name}"));
        let on_disk = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(
            &on_disk,
            bytes,
            "{} is stale: rewrite the seeds",
            p.display()
        );
    }
    replay(&files, harness::endpoint);
}

fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("regressions")
        .join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, b)
        })
        .collect()
}

/// Inputs that made a target fail, kept so that the bug stays fixed (see
/// tcp/fuzz/regressions/README.md for what each one found).
#[test]
fn parse_packet_regressions() {
    replay(&regressions("parse_packet"), harness::parse_packet);
}

/// See [`parse_packet_regressions`].
#[test]
fn endpoint_regressions() {
    let files = regressions("endpoint");
    assert!(!files.is_empty(), "the endpoint regressions are missing");
    replay(&files, harness::endpoint);
}

#[test]
fn endpoint_program_encoding_round_trips() {
    for (name, bytes) in harness::endpoint_seeds() {
        let p = harness::Program::decode(&bytes);
        assert_eq!(p.encode(), bytes, "seed {name} does not round-trip");
        assert!(!p.ops.is_empty(), "seed {name} is empty");
    }
}

/// The seeds must reach the states they are named after; otherwise the
/// fuzzer starts from nothing. Checked through the endpoint's counters.
#[test]
fn endpoint_seeds_reach_deep_states() {
    let seeds = harness::endpoint_seeds();
    let mut digests = std::collections::BTreeSet::new();
    let mut total = tcp::Stats::default();
    for (name, bytes) in &seeds {
        let out = harness::run_endpoint(bytes);
        assert!(
            digests.insert(out.digest),
            "seed {name} behaves exactly like another seed"
        );
        let s = &out.stats;
        let t = &mut total;
        t.passive_opens += s.passive_opens;
        t.active_opens += s.active_opens;
        t.syn_cookies_sent += s.syn_cookies_sent;
        t.syn_cookies_ok += s.syn_cookies_ok;
        t.retransmits += s.retransmits;
        t.rto_timeouts += s.rto_timeouts;
        t.fast_retransmits += s.fast_retransmits;
        t.challenge_acks += s.challenge_acks;
        t.challenge_acks_suppressed += s.challenge_acks_suppressed;
        t.ooo_segments += s.ooo_segments;
        t.icmp_echo += s.icmp_echo;
        t.timeouts += s.timeouts;
        t.rst_out += s.rst_out;
        t.rst_in += s.rst_in;
        t.closed += s.closed;
        t.drops.paws += s.drops.paws;
        t.drops.no_listener += s.drops.no_listener;
        t.drops.bad_tcp_checksum += s.drops.bad_tcp_checksum;
        t.drops.bad_icmp += s.drops.bad_icmp;
        t.drops.listen_overflow += s.drops.listen_overflow;
        // Fragments dropped, or taken into reassembly.
        t.drops.fragment += s.drops.fragment + s.reasm.fragments_in;
        t.drops.icmp_ignored += s.drops.icmp_ignored;
        t.drops.bad_ipv6_extension += s.drops.bad_ipv6_extension;
        t.drops.unsupported_protocol += s.drops.unsupported_protocol;
    }
    println!("{total:#?}");
    let t = &total;
    for (what, n) in [
        ("passive opens", t.passive_opens),
        ("active opens", t.active_opens),
        ("SYN cookies sent", t.syn_cookies_sent),
        ("SYN cookies accepted", t.syn_cookies_ok),
        ("retransmissions", t.retransmits),
        ("RTO expiries", t.rto_timeouts),
        ("fast retransmits", t.fast_retransmits),
        ("challenge ACKs", t.challenge_acks),
        ("rate-limited challenge ACKs", t.challenge_acks_suppressed),
        ("fragments", t.drops.fragment),
        ("ignored ICMP", t.drops.icmp_ignored),
        ("unsupported protocols", t.drops.unsupported_protocol),
        ("out-of-order segments", t.ooo_segments),
        ("ICMP echoes", t.icmp_echo),
        ("connection timeouts", t.timeouts),
        ("RSTs sent", t.rst_out),
        ("RSTs received", t.rst_in),
        ("connections closed", t.closed),
        ("PAWS drops", t.drops.paws),
        ("no-listener drops", t.drops.no_listener),
        ("bad TCP checksums", t.drops.bad_tcp_checksum),
        ("bad ICMP", t.drops.bad_icmp),
    ] {
        assert!(n > 0, "no seed reaches {what}");
    }
}

proptest! {
    // Failures are reported with the input; known ones go to
    // tcp/fuzz/regressions/ rather than a proptest-regressions file.
    #![proptest_config(ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn parse_packet_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        harness::parse_packet(&bytes);
    }

    /// Valid packets with a few bytes changed and the IP header checksum
    /// sometimes repaired, so that the TCP and ICMP parsers see the damage.
    #[test]
    fn parse_packet_mutated_seeds(
        pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        truncate in any::<prop::sample::Index>(),
        cut in any::<bool>(),
    ) {
        let seeds = harness::parse_packet_seeds();
        let (_, mut p) = seeds[pick.index(seeds.len())].clone();
        if !p.is_empty() {
            for (at, v) in &edits {
                let i = at.index(p.len());
                p[i] = *v;
            }
            if cut {
                let n = truncate.index(p.len() + 1);
                p.truncate(n);
            }
        }
        harness::parse_packet(&p);
    }

    #[test]
    fn endpoint_random_programs(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        harness::endpoint(&bytes);
    }

    /// A seed with random operations appended: random continuations of
    /// established connections.
    #[test]
    fn endpoint_seed_continuations(
        pick in any::<prop::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let seeds = harness::endpoint_seeds();
        let (_, mut p) = seeds[pick.index(seeds.len())].clone();
        p.extend_from_slice(&tail);
        harness::endpoint(&p);
    }
}
