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
    let start_unix_us = num(&v, "start_unix_us", &path)?;
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
