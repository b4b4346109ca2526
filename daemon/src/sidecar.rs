//! The sidecar `FILE.json` that `tcpd --pcap FILE` writes next to a capture
//! ([`crate::pcap::sidecar_path`]): what a replay needs to rebuild the same
//! endpoint and services. One definition, [`Sidecar`], serves the daemon
//! that writes it and `tcpd-replay`, which reads it back
//! ([`Sidecar::parse`], [`Sidecar::config`]).
//!
//! One JSON object (serde's field names; durations in whole µs):
//!
//! ```json
//! {
//!   "format": "tcpd-pcap-sidecar", "version": 1,
//!   "seed": 42,                        // tcp::Config::seed
//!   "start_unix_us": 1763800000000000, // pcap ts - this = endpoint now (µs)
//!   "iface": "tun0", "mtu": 1500,
//!   "addrs": ["10.0.0.2", "fd00::2"],  // the stack's addresses
//!   "host_addr": "10.0.0.1/24", "host_addr6": "fd00::1/64",
//!   "services": [{"name": "echo", "port": 7}, ...],
//!   "http_root": null,                 // or the directory
//!   "workers": 2, "nodelay": true, "backlog": 1024,
//!   "rx_budget": 128, "read_chunk": 65536, "pool_buffers": 256,
//!   "http": {"max_header_bytes": 8192, ... every field of HttpConfig but root},
//!   "fault": {"drop": 0.0, "dup": 0.0, ... every field of FaultConfig},
//!   "tcp": {"send_buffer": 262144, "delayed_ack_us": 40000, ... the
//!           tcp::Config the endpoint ran with, as its serde form}
//! }
//! ```
//!
//! Version 1 has grown: `rx_budget`, `read_chunk`, `pool_buffers`, `http`,
//! `fault.max_held` and several `tcp` fields were added after the first
//! captures were recorded. A reader takes [`Config::default`]'s value
//! (`tcp::Config::default`'s inside `tcp`) for each one that is missing,
//! which is what the daemon ran with before it was written; a field added
//! to `tcp::Config` later is written and read the same way without a change
//! here. The top-level `seed`, `mtu` and `addrs` are the ones a replay
//! uses; the copies inside `tcp` only record what the endpoint was given.

use crate::config::{Config, FaultConfig, IpNet};
use crate::services::HttpConfig;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;

/// The value of the `format` key.
pub const FORMAT: &str = "tcpd-pcap-sidecar";
/// The version this code writes and reads.
pub const VERSION: u32 = 1;

/// The most a sidecar may ask for the buffers a replay allocates up front
/// (`read_chunk` bytes): a hostile sidecar must not make the replay
/// allocate without bound.
pub const MAX_READ_CHUNK: usize = 16 << 20;
/// The most channel slots (`pool_buffers`) a sidecar may ask for.
pub const MAX_POOL_BUFFERS: usize = 1 << 20;

/// A service and its port, as `{"name": "echo", "port": 7}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// `echo`, `discard` or `http`.
    pub name: String,
    /// The port it listened on.
    pub port: u16,
}

/// The sidecar document (format in the module documentation). Fields
/// without a `serde(default)` were in the first version and are required.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sidecar {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// The endpoint's seed ([`Config::seed`]).
    pub seed: u64,
    /// Wall-clock µs of the endpoint's time zero: pcap ts − this = `now`.
    pub start_unix_us: u64,
    /// The interface name.
    #[serde(default = "defaults::iface")]
    pub iface: String,
    /// The device MTU.
    pub mtu: usize,
    /// The stack's addresses: at most one IPv4 and one IPv6.
    pub addrs: Vec<IpAddr>,
    /// The host side's IPv4 address and prefix.
    #[serde(default = "defaults::host_addr")]
    pub host_addr: IpNet,
    /// The host side's IPv6 address and prefix.
    #[serde(default = "defaults::host_addr6")]
    pub host_addr6: IpNet,
    /// The services that ran, with their ports.
    pub services: Vec<ServicePort>,
    /// `--http-root`, if any (lossy UTF-8: it is only shown, a replay of a
    /// capture with static files refuses to run).
    #[serde(default)]
    pub http_root: Option<String>,
    /// Worker threads (0: handlers ran inline, as a replay runs them).
    pub workers: usize,
    /// [`Config::nodelay`].
    pub nodelay: bool,
    /// [`Config::backlog`].
    pub backlog: usize,
    /// [`Config::rx_budget`] (added later).
    #[serde(default = "defaults::rx_budget")]
    pub rx_budget: usize,
    /// [`Config::read_chunk`] (added later).
    #[serde(default = "defaults::read_chunk")]
    pub read_chunk: usize,
    /// [`Config::pool_buffers`] (added later).
    #[serde(default = "defaults::pool_buffers")]
    pub pool_buffers: usize,
    /// The HTTP service's limits (added later: absent, the defaults of
    /// then, without the timeouts and `Date` that came after).
    #[serde(default = "defaults::http")]
    pub http: HttpConfig,
    /// The fault injector's settings.
    pub fault: FaultConfig,
    /// Whether the device ran with segmentation and checksum offload
    /// ([`Config::effective_offload`]); then `FILE.gso` says which records
    /// were one super-packet for the stack. Added later: absent, the
    /// capture was recorded without offload, as every one was before.
    #[serde(default)]
    pub offload: bool,
    /// The endpoint's configuration as it ran ([`Config::tcp_config`]).
    pub tcp: tcp::Config,
}

/// Defaults of the fields added after the first version: those of
/// [`Config::default`].
mod defaults {
    use super::*;

    pub fn iface() -> String {
        Config::default().iface
    }
    pub fn host_addr() -> IpNet {
        Config::default().host_addr
    }
    pub fn host_addr6() -> IpNet {
        Config::default().host_addr6
    }
    pub fn rx_budget() -> usize {
        Config::default().rx_budget
    }
    pub fn read_chunk() -> usize {
        Config::default().read_chunk
    }
    pub fn pool_buffers() -> usize {
        Config::default().pool_buffers
    }
    pub fn http() -> HttpConfig {
        HttpConfig {
            header_timeout: None,
            idle_timeout: None,
            send_timeout: None,
            date: false,
            ..HttpConfig::default()
        }
    }
}

/// Just the keys that say what a JSON document is, read before the rest so
/// that a foreign file is named as such rather than by its first missing
/// field.
#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<serde_json::Value>,
}

impl Sidecar {
    /// The sidecar of a daemon running `cfg`, whose endpoint time zero is
    /// `start_unix_us`, on a device of `mtu`, with `workers` threads.
    pub fn of(cfg: &Config, start_unix_us: u64, mtu: usize, workers: usize) -> Sidecar {
        Sidecar {
            format: FORMAT.into(),
            version: VERSION,
            seed: cfg.seed,
            start_unix_us,
            iface: cfg.iface.clone(),
            mtu,
            addrs: cfg.stack_addrs(),
            host_addr: cfg.host_addr,
            host_addr6: cfg.host_addr6,
            services: cfg
                .service_ports()
                .into_iter()
                .map(|(name, port)| ServicePort {
                    name: name.into(),
                    port,
                })
                .collect(),
            http_root: cfg
                .http_root
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            workers,
            nodelay: cfg.nodelay,
            backlog: cfg.backlog,
            rx_budget: cfg.rx_budget,
            read_chunk: cfg.read_chunk,
            pool_buffers: cfg.pool_buffers,
            http: cfg.http.clone(),
            fault: cfg.fault,
            offload: cfg.effective_offload(),
            tcp: cfg.tcp_config(),
        }
    }

    /// The document, pretty-printed, with a final newline.
    pub fn to_json(&self) -> String {
        // Serializing into memory fails only for a map with non-string keys
        // or a path that is not UTF-8; this type has neither (`http_root`
        // is a lossy String), so there is no error to handle.
        #[allow(clippy::expect_used)]
        let mut s = serde_json::to_string_pretty(self).expect("a Sidecar always serializes");
        s.push('\n');
        s
    }

    /// Reads a sidecar document. The error is one line naming the field
    /// at fault (`"tcp.min_rto_us": invalid type: ...`), without the file's
    /// name, which the caller puts in front.
    pub fn parse(text: &str) -> Result<Sidecar, String> {
        let h: Header = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if h.format.as_deref() != Some(FORMAT) {
            return Err(format!(
                "not a tcpd capture sidecar (no \"format\": \"{FORMAT}\")"
            ));
        }
        match h.version {
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(VERSION.into()) => {}
            Some(v) => {
                return Err(format!(
                    "sidecar version {v}; this tcpd-replay reads version {VERSION}"
                ))
            }
            None => return Err("missing field \"version\"".into()),
        }
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("\"{path}\": {}", e.inner())
            }
        })
    }

    /// The daemon configuration the capture was recorded with, checked:
    /// every value a replay sizes buffers or runs an endpoint with is in
    /// range, or the error names the field. `workers`, `pcap` and the
    /// device settings are left to the caller.
    pub fn config(&self) -> Result<Config, String> {
        let d = Config::default();
        let mut c = Config {
            seed: self.seed,
            mtu: self.mtu,
            iface: self.iface.clone(),
            echo_port: 0,
            discard_port: 0,
            http_port: 0,
            addr6: None,
            host_addr: self.host_addr,
            host_addr6: self.host_addr6,
            http_root: self.http_root.as_ref().map(PathBuf::from),
            workers: self.workers,
            nodelay: self.nodelay,
            backlog: self.backlog,
            rx_budget: in_range("rx_budget", self.rx_budget, 1, u32::MAX as usize)?,
            read_chunk: in_range("read_chunk", self.read_chunk, 1, MAX_READ_CHUNK)?,
            pool_buffers: in_range("pool_buffers", self.pool_buffers, 1, MAX_POOL_BUFFERS)?,
            http: self.http.clone(),
            fault: self.fault,
            offload: self.offload,
            tcp: self.tcp.clone(),
            ..d
        };
        let limit = u32::MAX as usize;
        let h = &self.http;
        in_range("http.max_header_bytes", h.max_header_bytes, 1, limit)?;
        in_range("http.max_headers", h.max_headers, 1, limit)?;
        in_range("http.max_requests", h.max_requests as usize, 1, limit)?;
        let mut have4 = false;
        for a in &self.addrs {
            match *a {
                IpAddr::V4(a) if !have4 => {
                    c.addr = a;
                    have4 = true;
                }
                IpAddr::V6(a) if c.addr6.is_none() => c.addr6 = Some(a),
                _ => return Err("\"addrs\" has more than one address per family".into()),
            }
        }
        for s in &self.services {
            match s.name.as_str() {
                "echo" => c.echo_port = s.port,
                "discard" => c.discard_port = s.port,
                "http" => c.http_port = s.port,
                other => return Err(format!("unknown service \"{other}\"")),
            }
        }
        c.tcp_config().validate()?;
        Ok(c)
    }
}

/// `v` if it lies in `lo..=hi`, else an error naming `key`.
fn in_range(key: &str, v: usize, lo: usize, hi: usize) -> Result<usize, String> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!("\"{key}\" is {v}, outside {lo}..={hi}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every field of the daemon's configuration that a replay needs comes
    /// back from the JSON as it went in.
    #[test]
    fn round_trip() {
        let mut cfg = Config {
            seed: 9,
            iface: "tun\"7".into(),
            echo_port: 7,
            http_port: 8080,
            discard_port: 0,
            http_root: Some("/srv/www".into()),
            ..Config::default()
        };
        cfg.fault.drop = 0.25;
        cfg.tcp.keepalive = Some(tcp::Keepalive::default());
        cfg.tcp.min_rto = tcp::Duration::from_micros(123_456);
        let text = Sidecar::of(&cfg, 77, 1400, 3).to_json();
        assert!(text.contains("\"min_rto_us\": 123456"), "{text}");
        assert!(text.contains("\"idle_us\": 7200000000"), "{text}");
        let sc = Sidecar::parse(&text).unwrap();
        assert_eq!((sc.start_unix_us, sc.mtu, sc.workers), (77, 1400, 3));
        let c = sc.config().unwrap();
        assert_eq!(c.seed, 9);
        assert_eq!(c.iface, "tun\"7");
        assert_eq!((c.echo_port, c.discard_port, c.http_port), (7, 0, 8080));
        assert_eq!(c.http_root, Some(PathBuf::from("/srv/www")));
        assert_eq!(c.fault.drop, 0.25);
        assert_eq!(c.tcp.keepalive, Some(tcp::Keepalive::default()));
        assert_eq!(c.tcp.min_rto.as_micros(), 123_456);
        assert_eq!(c.addr, cfg.addr);
        assert_eq!(c.addr6, cfg.addr6);
    }

    /// RACK-TLP, F-RTO and Limited Transmit are on in what tcpd records
    /// now; a sidecar from before those fields reads them as off, the
    /// behaviour it was recorded with.
    #[test]
    fn loss_detection_fields_absent_read_as_the_old_behaviour() {
        let text = Sidecar::of(&Config::default(), 1, 1500, 0).to_json();
        let c = Sidecar::parse(&text).unwrap().config().unwrap();
        assert!(c.tcp.rack && c.tcp.tlp && c.tcp.frto && c.tcp.limited_transmit);
        let mut old = text.clone();
        for f in ["rack", "tlp", "frto", "limited_transmit"] {
            let line = format!("\"{f}\": true,");
            assert!(old.contains(&line), "{f} missing from {text}");
            old = old.replace(&line, "");
        }
        let c = Sidecar::parse(&old).unwrap().config().unwrap();
        assert!(!c.tcp.rack && !c.tcp.tlp && !c.tcp.frto && !c.tcp.limited_transmit);
    }

    /// A bad document is refused in one line that names the field.
    #[test]
    fn errors_name_the_field() {
        let text = Sidecar::of(&Config::default(), 1, 1500, 0).to_json();
        let bad = text.replace("\"min_rto_us\": 200000", "\"min_rto_us\": \"soon\"");
        assert_ne!(bad, text);
        let e = Sidecar::parse(&bad).unwrap_err();
        assert!(e.starts_with("\"tcp.min_rto_us\": invalid type"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let bad = text.replace("\"host_addr\": \"10.0.0.1/24\"", "\"host_addr\": \"x\"");
        assert_ne!(bad, text);
        let e = Sidecar::parse(&bad).unwrap_err();
        assert!(e.contains("\"host_addr\""), "{e}");
        let e = Sidecar::parse(&text.replace("\"seed\": 0,\n  \"start", "\"start")).unwrap_err();
        assert!(e.contains("missing field `seed`"), "{e}");
        let e = Sidecar::parse("{\"format\": \"other\"}").unwrap_err();
        assert!(e.contains("not a tcpd capture sidecar"), "{e}");
        let e = Sidecar::parse(&text.replace("\"version\": 1", "\"version\": 2")).unwrap_err();
        assert!(e.contains("sidecar version 2"), "{e}");
        assert!(Sidecar::parse("{").is_err());
    }
}
