//! The sidecar `FILE.json` that `tcpd --pcap FILE` writes next to a capture
//! (format: `daemon::pcap`), turned back into the [`daemon::Config`] the
//! daemon ran with.

use super::json::{self, Value};
use daemon::{Config, IpNet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
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

fn field<'a>(v: &'a Value, key: &str, path: &Path) -> Result<&'a Value, String> {
    v.get(key)
        .ok_or_else(|| format!("{}: missing field \"{key}\"", path.display()))
}

fn num(v: &Value, key: &str, path: &Path) -> Result<u64, String> {
    field(v, key, path)?
        .as_u64()
        .ok_or_else(|| format!("{}: \"{key}\" is not an unsigned integer", path.display()))
}

fn flag(v: &Value, key: &str, path: &Path) -> Result<bool, String> {
    field(v, key, path)?
        .as_bool()
        .ok_or_else(|| format!("{}: \"{key}\" is not true/false", path.display()))
}

fn prob(v: &Value, key: &str, path: &Path) -> Result<f64, String> {
    field(v, key, path)?
        .as_f64()
        .ok_or_else(|| format!("{}: \"{key}\" is not a number", path.display()))
}

/// An optional timeout in µs: `None` when absent, `null` or 0.
fn opt_us(v: &Value, key: &str, path: &Path) -> Result<Option<std::time::Duration>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => {
            let n = num(v, key, path)?;
            Ok((n != 0).then(|| std::time::Duration::from_micros(n)))
        }
    }
}

/// An optional unsigned field: `default` when absent (a sidecar written
/// before the field was), an error when present but not an integer or
/// outside `range`.
fn num_or(
    v: &Value,
    key: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    path: &Path,
) -> Result<u64, String> {
    let n = match v.get(key) {
        None => return Ok(default),
        Some(x) => x
            .as_u64()
            .ok_or_else(|| format!("{}: \"{key}\" is not an unsigned integer", path.display()))?,
    };
    if !range.contains(&n) {
        return Err(format!(
            "{}: \"{key}\" is {n}, outside {}..={}",
            path.display(),
            range.start(),
            range.end()
        ));
    }
    Ok(n)
}

/// The most a sidecar may ask for the buffers a replay allocates up front
/// (`read_chunk` bytes, `pool_buffers` channel slots): a hostile sidecar
/// must not make the replay allocate without bound.
const MAX_READ_CHUNK: u64 = 16 << 20;
const MAX_POOL_BUFFERS: u64 = 1 << 20;

fn us(v: &Value, key: &str, path: &Path) -> Result<Duration, String> {
    Ok(Duration::from_micros(num(v, key, path)?))
}

/// Reads the sidecar of the capture at `pcap`.
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
    let v = json::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if v.get("format").and_then(Value::as_str) != Some("tcpd-pcap-sidecar") {
        return Err(format!(
            "{}: not a tcpd capture sidecar (no \"format\": \"tcpd-pcap-sidecar\")",
            path.display()
        ));
    }
    let version = num(&v, "version", &path)?;
    if version != 1 {
        return Err(format!(
            "{}: sidecar version {version}; this tcpd-replay reads version 1",
            path.display()
        ));
    }
    let mut c = Config {
        seed: num(&v, "seed", &path)?,
        mtu: num(&v, "mtu", &path)? as usize,
        echo_port: 0,
        discard_port: 0,
        http_port: 0,
        addr6: None,
        // The daemon recorded this capture: with `--pcap` set, which also
        // decides device features that change the bytes (no offload).
        pcap: Some(pcap.to_path_buf()),
        ..Config::default()
    };
    if let Some(s) = v.get("iface").and_then(Value::as_str) {
        c.iface = s.to_string();
    }
    let addrs = field(&v, "addrs", &path)?
        .as_array()
        .ok_or_else(|| format!("{}: \"addrs\" is not an array", path.display()))?;
    let mut have4 = false;
    for a in addrs {
        let ip: IpAddr = a
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{}: bad address in \"addrs\"", path.display()))?;
        match ip {
            IpAddr::V4(a) if !have4 => {
                c.addr = a;
                have4 = true;
            }
            IpAddr::V6(a) if c.addr6.is_none() => c.addr6 = Some(a),
            _ => {
                return Err(format!(
                    "{}: \"addrs\" has more than one address per family",
                    path.display()
                ))
            }
        }
    }
    for (key, slot) in [
        ("host_addr", &mut c.host_addr),
        ("host_addr6", &mut c.host_addr6),
    ] {
        if let Some(s) = v.get(key).and_then(Value::as_str) {
            *slot = IpNet::parse(s).map_err(|e| format!("{}: {key}: {e}", path.display()))?;
        }
    }
    let services = field(&v, "services", &path)?
        .as_array()
        .ok_or_else(|| format!("{}: \"services\" is not an array", path.display()))?;
    for s in services {
        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
        let port = s
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("{}: a service without a valid port", path.display()))?;
        match name {
            "echo" => c.echo_port = port,
            "discard" => c.discard_port = port,
            "http" => c.http_port = port,
            other => return Err(format!("{}: unknown service \"{other}\"", path.display())),
        }
    }
    if let Some(r) = v.get("http_root").and_then(Value::as_str) {
        c.http_root = Some(PathBuf::from(r));
    }
    let workers = num(&v, "workers", &path)? as usize;
    c.workers = 0;
    c.nodelay = flag(&v, "nodelay", &path)?;
    c.backlog = num(&v, "backlog", &path)? as usize;
    // Added after the first fixtures were recorded: absent means the
    // defaults the daemon had then (and still has).
    let d = Config::default();
    c.rx_budget = num_or(
        &v,
        "rx_budget",
        d.rx_budget as u64,
        1..=u32::MAX.into(),
        &path,
    )? as usize;
    c.read_chunk = num_or(
        &v,
        "read_chunk",
        d.read_chunk as u64,
        1..=MAX_READ_CHUNK,
        &path,
    )? as usize;
    c.pool_buffers = num_or(
        &v,
        "pool_buffers",
        d.pool_buffers as u64,
        1..=MAX_POOL_BUFFERS,
        &path,
    )? as usize;
    // Fields added after captures were made replay as the old behaviour
    // when absent: no HTTP timers, no Date, no connection limits.
    c.http.header_timeout = None;
    c.http.idle_timeout = None;
    c.http.send_timeout = None;
    c.http.date = false;
    c.tcp.max_passive = 0;
    c.tcp.max_passive_per_source = 0;
    match v.get("http") {
        None => {}
        Some(h @ Value::Obj(_)) => {
            let dh = &d.http;
            c.http.max_header_bytes = num_or(
                h,
                "max_header_bytes",
                dh.max_header_bytes as u64,
                1..=u32::MAX.into(),
                &path,
            )? as usize;
            c.http.max_headers = num_or(
                h,
                "max_headers",
                dh.max_headers as u64,
                1..=u32::MAX.into(),
                &path,
            )? as usize;
            c.http.max_requests = num_or(
                h,
                "max_requests",
                dh.max_requests.into(),
                1..=u32::MAX.into(),
                &path,
            )? as u32;
            c.http.max_body_bytes =
                num_or(h, "max_body_bytes", dh.max_body_bytes, 0..=u64::MAX, &path)?;
            c.http.max_bytes_n = num_or(h, "max_bytes_n", dh.max_bytes_n, 0..=u64::MAX, &path)?;
            c.http.header_timeout = opt_us(h, "header_timeout_us", &path)?;
            c.http.idle_timeout = opt_us(h, "idle_timeout_us", &path)?;
            c.http.send_timeout = opt_us(h, "send_timeout_us", &path)?;
            c.http.date = match h.get("date") {
                None => false,
                Some(_) => flag(h, "date", &path)?,
            };
        }
        Some(_) => return Err(format!("{}: \"http\" is not an object", path.display())),
    }
    let f = field(&v, "fault", &path)?;
    c.fault.drop = prob(f, "drop", &path)?;
    c.fault.dup = prob(f, "dup", &path)?;
    c.fault.reorder = prob(f, "reorder", &path)?;
    c.fault.corrupt = prob(f, "corrupt", &path)?;
    c.fault.delay_ms = num(f, "delay_ms", &path)?;
    c.fault.seed = num(f, "seed", &path)?;
    let t = field(&v, "tcp", &path)?;
    let tc = &mut c.tcp;
    tc.max_connections = num(t, "max_connections", &path)? as usize;
    tc.send_buffer = num(t, "send_buffer", &path)? as usize;
    tc.recv_buffer = num(t, "recv_buffer", &path)? as usize;
    tc.max_ooo_ranges = num(t, "max_ooo_ranges", &path)? as usize;
    tc.buffer_pool_bytes = num(t, "buffer_pool_bytes", &path)? as usize;
    tc.delayed_ack = us(t, "delayed_ack_us", &path)?;
    tc.min_rto = us(t, "min_rto_us", &path)?;
    tc.initial_rto = us(t, "initial_rto_us", &path)?;
    tc.max_rto = us(t, "max_rto_us", &path)?;
    tc.time_wait = us(t, "time_wait_us", &path)?;
    tc.user_timeout = us(t, "user_timeout_us", &path)?;
    tc.syn_retries = num(t, "syn_retries", &path)? as u32;
    tc.synack_retries = num(t, "synack_retries", &path)? as u32;
    tc.keepalive = match field(t, "keepalive", &path)? {
        Value::Null => None,
        k => Some(tcp::Keepalive {
            idle: us(k, "idle_us", &path)?,
            interval: us(k, "interval_us", &path)?,
            count: num(k, "count", &path)? as u32,
        }),
    };
    tc.nagle = flag(t, "nagle", &path)?;
    tc.initial_window = num(t, "initial_window", &path)? as u32;
    tc.window_scaling = flag(t, "window_scaling", &path)?;
    tc.timestamps = flag(t, "timestamps", &path)?;
    tc.sack = flag(t, "sack", &path)?;
    tc.syn_cookies = flag(t, "syn_cookies", &path)?;
    tc.syn_backlog = num(t, "syn_backlog", &path)? as usize;
    tc.challenge_ack_limit = num(t, "challenge_ack_limit", &path)? as u32;
    let ep = field(t, "ephemeral_ports", &path)?
        .as_array()
        .filter(|a| a.len() == 2)
        .ok_or_else(|| format!("{}: \"ephemeral_ports\" is not a pair", path.display()))?;
    let port = |v: &Value| v.as_u64().and_then(|p| u16::try_from(p).ok());
    tc.ephemeral_ports = match (port(&ep[0]), port(&ep[1])) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(format!("{}: bad \"ephemeral_ports\"", path.display())),
    };
    tc.max_control_queue = num(t, "max_control_queue", &path)? as usize;
    tc.ttl = num(t, "ttl", &path)?.min(255) as u8;
    tc.max_passive = num_or(t, "max_passive", 0, 0..=u64::MAX, &path)? as usize;
    tc.max_passive_per_source =
        num_or(t, "max_passive_per_source", 0, 0..=u64::MAX, &path)? as usize;
    let start_unix_us = num(&v, "start_unix_us", &path)?;
    if start_unix_us > crate::replay::pcapio::MAX_TS_US {
        return Err(format!(
            "{}: \"start_unix_us\" {start_unix_us} is after the year 9999",
            path.display()
        ));
    }
    c.tcp_config()
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Sidecar {
        config: c,
        start_unix_us,
        workers,
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
    }
}
