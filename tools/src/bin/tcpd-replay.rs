//! `tcpd-replay`: replay and re-record tcpd's pcap fixtures (issue 4).
//!
//! ```text
//! tcpd-replay check FILE     replay a tcpd capture, compare every packet
//! tcpd-replay bless FILE     rewrite the expected outbound packets
//! tcpd-replay show FILE      readable trace with connection states
//! tcpd-replay play FILE      play a foreign capture's client against tcpd
//! ```
//!
//! Exit status: 0 when the capture replays (or plays) cleanly, 1 on a
//! difference (the first one is printed, decoded), 2 when the capture
//! cannot be used (no sidecar, truncated, not IP, recorded with worker
//! threads). `TCPD_REPLAY_DEBUG=1` traces the replay on stderr. The library
//! side is `tools::replay`; fixtures and what they check are listed in
//! `captures/README.md`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tools::replay::sim::{HostKind, REACTOR_HOST};
use tools::replay::{self, play::Kind, Capture};

fn parse_host(s: &str) -> Result<HostKind, String> {
    match s {
        "reactor" => Ok(HostKind::Reactor),
        "inline" => Ok(HostKind::Inline),
        _ => Err(format!("unknown host '{s}' (reactor or inline)")),
    }
}

#[derive(Parser)]
#[command(
    name = "tcpd-replay",
    version,
    about = "Replay tcpd pcap captures offline"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Feed the capture's inbound packets to a fresh endpoint configured as
    /// the sidecar says and compare what it sends with the recorded packets.
    Check {
        /// Capture recorded by `tcpd --pcap FILE --seed N --workers 0`.
        file: PathBuf,
        /// How the services are hosted: `reactor` (the reactor's worker
        /// host) or `inline` (InlineHost); default: as the current daemon.
        #[arg(long, value_name = "KIND", value_parser = parse_host)]
        host: Option<HostKind>,
    },
    /// Rewrite the capture's outbound packets from the current code.
    Bless {
        /// Capture recorded by `tcpd --pcap FILE`.
        file: PathBuf,
        /// As for `check`.
        #[arg(long, value_name = "KIND", value_parser = parse_host)]
        host: Option<HostKind>,
    },
    /// Print a tcpdump-like trace with relative sequence numbers and the
    /// connection state after each packet.
    Show {
        /// Any pcap or pcapng capture; connection states need the tcpd sidecar.
        file: PathBuf,
        /// Also print each connection's windows, RTT and buffers.
        #[arg(short, long)]
        verbose: bool,
        /// As for `check`.
        #[arg(long, value_name = "KIND", value_parser = parse_host)]
        host: Option<HostKind>,
    },
    /// Play the client side of a foreign capture against tcpd's endpoint and
    /// services; check delivery, acknowledgments and how connections end.
    Play {
        /// A pcap or pcapng capture of TCP sessions (tcpdump, Wireshark; any
        /// link type with IP).
        file: PathBuf,
        /// Service answering every server port (echo, discard, http);
        /// default: guessed from the client's first bytes.
        #[arg(long, value_name = "NAME", value_parser = Kind::parse)]
        service: Option<Kind>,
    },
}

fn main() -> ExitCode {
    tools::sys::default_sigpipe();
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tcpd-replay: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cmd: Cmd) -> Result<bool, String> {
    match cmd {
        Cmd::Check { file, host } => {
            let cap = Capture::load(&file)?;
            let o = replay::check_with(&cap, host.unwrap_or(REACTOR_HOST))?;
            match o.mismatch {
                None => {
                    println!(
                        "{}: ok ({} packets in, {} packets out identical; {})",
                        file.display(),
                        o.fed,
                        o.matched,
                        o.summary()
                    );
                    Ok(true)
                }
                Some(m) => {
                    eprintln!(
                        "{}: MISMATCH after {} identical packets\n{m}",
                        file.display(),
                        o.matched
                    );
                    Ok(false)
                }
            }
        }
        Cmd::Bless { file, host } => {
            let cap = Capture::load(&file)?;
            let (before, after) = replay::bless(&cap, host.unwrap_or(REACTOR_HOST))?;
            println!(
                "{}: rewrote the outbound packets ({before} before, {after} now)",
                file.display()
            );
            Ok(true)
        }
        Cmd::Show {
            file,
            verbose,
            host,
        } => {
            print!(
                "{}",
                replay::show(&file, verbose, host.unwrap_or(REACTOR_HOST))?
            );
            Ok(true)
        }
        Cmd::Play { file, service } => {
            let r = replay::play::play(&file, service)?;
            print!("{}", r.text());
            Ok(r.ok())
        }
    }
}
