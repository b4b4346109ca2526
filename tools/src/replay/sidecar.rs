//! The sidecar `FILE.json` that `tcpd --pcap FILE` writes next to a capture
//! (format: `daemon::pcap`), turned back into the [`daemon::Config`] the
//! daemon ran with.

use daemon::sidecar::Sidecar as File;
use daemon::Config;
use std::path::{Path, PathBuf};
#[cfg(test)]
use tcp::time::Duration;

/// What a replay needs from the sidecar.
#[derive(Clone, Debug)]
pub struct Sidecar {
    /// The daemon configuration (seed, addresses, MTU, services, TCP limits).
    pub config: Config,
    /// Wall-clock µs of the endpoint's time zero: pcap ts − this = `now`.
    pub start_unix_us: u64,
    /// Worker threads the capture was recorded with (0 = inline services).
    pub workers: usize,
    /// Where the sidecar was read from.
    pub path: PathBuf,
}

/// The sidecar path for a capture: `FILE.json`.
pub fn path_for(pcap: &Path) -> PathBuf {
    daemon::pcap::sidecar_path(pcap)
}

/// Reads the sidecar of the capture at `pcap` (format and defaults of
/// missing fields: [`daemon::sidecar`]). An error is one line naming the
/// file and the field.
pub fn load(pcap: &Path) -> Result<Sidecar, String> {
    let path = path_for(pcap);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{}: no configuration for this capture: {} is missing (tcpd --pcap FILE \
                 writes it; a foreign capture can only be used with `tcpd-replay play`)",
                pcap.display(),
                path.display()
            ))
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let at = |e: String| format!("{}: {e}", path.display());
    let file = File::parse(&text).map_err(at)?;
    if file.start_unix_us > crate::replay::pcapio::MAX_TS_US {
        return Err(at(format!(
            "\"start_unix_us\" {} is after the year 9999",
            file.start_unix_us
        )));
    }
    let mut c = file.config().map_err(at)?;
    c.workers = 0;
    // The daemon recorded this capture: with `--pcap` set. Offload (which
    // changes the bytes the stack saw) is what the sidecar says.
    c.pcap = Some(pcap.to_path_buf());
    Ok(Sidecar {
        config: c,
        start_unix_us: file.start_unix_us,
        workers: file.workers,
        path,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> crate::replay::TempDir {
        crate::replay::TempDir::new(&format!("sidecar-{name}"))
    }

    /// What the daemon writes is what the replay reads back, for every
    /// setting that changes the bytes, including those added after the
    /// first fixtures (rx_budget, read_chunk, pool_buffers, HTTP limits).
    #[test]
    fn the_daemons_sidecar_reads_back_with_every_setting() {
        let dir = scratch("roundtrip");
        let pcap = dir.join("x.pcap");
        let mut cfg = Config {
            seed: 77,
            workers: 0,
            rx_budget: 7,
            read_chunk: 4096,
            pool_buffers: 9,
            nodelay: false,
            backlog: 33,
            ..Config::default()
        };
        cfg.http.max_header_bytes = 2000;
        cfg.http.max_headers = 12;
        cfg.http.max_requests = 3;
        cfg.http.max_body_bytes = 0;
        cfg.http.max_bytes_n = 123_456;
        cfg.tcp.delayed_ack = Duration::from_micros(25_000);
        cfg.tcp.min_rto = Duration::from_micros(150_000);
        let clock = daemon::clock::Clock::new();
        let text = daemon::pcap::sidecar_json(&cfg, &clock, cfg.mtu, 0);
        std::fs::write(path_for(&pcap), &text).unwrap();
        let sc = load(&pcap).unwrap();
        let c = &sc.config;
        assert_eq!(sc.start_unix_us, clock.start_unix_us());
        assert_eq!(c.seed, 77);
        assert_eq!(c.rx_budget, 7);
        assert_eq!(c.read_chunk, 4096);
        assert_eq!(c.pool_buffers, 9);
        assert!(!c.nodelay);
        assert_eq!(c.backlog, 33);
        assert_eq!(c.http.max_header_bytes, 2000);
        assert_eq!(c.http.max_headers, 12);
        assert_eq!(c.http.max_requests, 3);
        assert_eq!(c.http.max_body_bytes, 0);
        assert_eq!(c.http.max_bytes_n, 123_456);
        assert_eq!(c.tcp.delayed_ack.as_micros(), 25_000);
        assert_eq!(c.tcp.min_rto.as_micros(), 150_000);
        // New recordings say which congestion control and recovery ran.
        assert_eq!(c.tcp.congestion, tcp::Congestion::Cubic);
        assert!(c.tcp.hystart && c.tcp.prr);
        assert!(c.tcp.icmp_unreachables, "recorded as on");
        let mut reno = cfg.clone();
        reno.tcp.congestion = tcp::Congestion::NewReno;
        reno.tcp.prr = false;
        let t2 = daemon::pcap::sidecar_json(&reno, &clock, reno.mtu, 0);
        std::fs::write(path_for(&pcap), &t2).unwrap();
        let c2 = load(&pcap).unwrap().config;
        assert_eq!(c2.tcp.congestion, tcp::Congestion::NewReno);
        assert!(c2.tcp.hystart && !c2.tcp.prr);
        let bad = text.replace("\"congestion\": \"cubic\"", "\"congestion\": \"vegas\"");
        assert_ne!(bad, text);
        std::fs::write(path_for(&pcap), &bad).unwrap();
        let e = load(&pcap).unwrap_err();
        assert!(e.contains("congestion"), "{e}");
        // Out of range: refused with the field's name.
        let bad = text.replace("\"read_chunk\": 4096", "\"read_chunk\": 0");
        assert_ne!(bad, text);
        std::fs::write(path_for(&pcap), &bad).unwrap();
        let e = load(&pcap).unwrap_err();
        assert!(e.contains("\"read_chunk\" is 0"), "{e}");
        let huge = text.replace("\"pool_buffers\": 9", "\"pool_buffers\": 99999999999");
        std::fs::write(path_for(&pcap), &huge).unwrap();
        let e = load(&pcap).unwrap_err();
        assert!(e.contains("\"pool_buffers\""), "{e}");
    }

    /// A sidecar written before rx_budget, read_chunk, pool_buffers and the
    /// HTTP limits were recorded (this is one from the first fixtures)
    /// still loads, with the defaults the daemon then ran with.
    #[test]
    fn an_old_sidecar_loads_with_the_defaults() {
        let dir = scratch("old");
        let pcap = dir.join("old.pcap");
        let old = r#"{
  "format": "tcpd-pcap-sidecar",
  "version": 1,
  "seed": 2,
  "start_unix_us": 1795337898456002,
  "iface": "tun0",
  "mtu": 1500,
  "addrs": ["10.0.0.2", "fd00::2"],
  "host_addr": "10.0.0.1/24",
  "host_addr6": "fd00::1/64",
  "services": [{"name": "echo", "port": 7}, {"name": "discard", "port": 9}, {"name": "http", "port": 80}],
  "http_root": null,
  "workers": 0,
  "nodelay": true,
  "backlog": 1024,
  "fault": {"drop": 0, "dup": 0, "reorder": 0, "corrupt": 0, "delay_ms": 0, "seed": 1},
  "tcp": {"max_connections": 200000, "send_buffer": 262144, "recv_buffer": 262144, "max_ooo_ranges": 32, "buffer_pool_bytes": 33554432, "delayed_ack_us": 40000, "min_rto_us": 200000, "initial_rto_us": 1000000, "max_rto_us": 120000000, "time_wait_us": 60000000, "user_timeout_us": 120000000, "syn_retries": 6, "synack_retries": 5, "keepalive": null, "nagle": true, "initial_window": 10, "window_scaling": true, "timestamps": true, "sack": true, "syn_cookies": true, "syn_backlog": 1024, "challenge_ack_limit": 1000, "ephemeral_ports": [32768, 60999], "max_control_queue": 1024, "ttl": 64}
}
"#;
        std::fs::write(path_for(&pcap), old).unwrap();
        let sc = load(&pcap).unwrap();
        let d = Config::default();
        assert_eq!(sc.config.seed, 2);
        assert_eq!(sc.config.rx_budget, d.rx_budget);
        assert_eq!(sc.config.read_chunk, d.read_chunk);
        assert_eq!(sc.config.pool_buffers, d.pool_buffers);
        assert_eq!(sc.config.http.max_header_bytes, d.http.max_header_bytes);
        assert_eq!(sc.config.http.max_headers, d.http.max_headers);
        assert_eq!(sc.config.http.max_requests, d.http.max_requests);
        assert_eq!(sc.config.http.max_body_bytes, d.http.max_body_bytes);
        assert_eq!(sc.config.http.max_bytes_n, d.http.max_bytes_n);
        // Recorded before CUBIC, HyStart++ and PRR: replays as it ran.
        assert_eq!(sc.config.tcp.congestion, tcp::Congestion::NewReno);
        assert!(!sc.config.tcp.hystart && !sc.config.tcp.prr);
        // Recorded before tcpd sent ICMP errors for UDP and unknown protocols.
        assert!(!sc.config.tcp.icmp_unreachables);
        // Recorded before buffer auto-tuning: fixed buffers, and the window
        // scale of a 256 KiB buffer (3), as recorded.
        assert!(!sc.config.tcp.autotune_buffers);
        assert_eq!(sc.config.tcp.recv_wscale(), 3);
        assert_eq!(sc.config.tcp.recv_buffer_ceiling(), 262144);
    }
}
