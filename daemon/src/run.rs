//! Putting it together: open the device, stack the middleware, start the
//! services and the reactor, print how to reach them, serve until a signal.

use crate::clock::Clock;
use crate::config::Config;
use crate::device::Device;
use crate::error::Error;
use crate::fault::FaultDevice;
use crate::pcap::{sidecar_json, sidecar_path, PcapTap};
use crate::reactor::Reactor;
use crate::services::{Discard, Echo, HttpService, Service, Status, StatusBoard};
use crate::tun::TunDevice;
use std::fmt::Write as _;
use std::sync::Arc;
use tracing::{debug, info};

/// What tcpd prints at start: where it is and how to reach it.
pub fn banner(cfg: &Config, mtu: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "tcpd: serving on {} (MTU {mtu}{}), {}",
        cfg.iface,
        if cfg.effective_offload() {
            ", TSO/checksum offload"
        } else {
            ""
        },
        match cfg.workers {
            0 => "services inline on the reactor".to_string(),
            1 => "1 worker thread".to_string(),
            n => format!("{n} worker threads"),
        }
    );
    if cfg.forward.active() && cfg.workers > 0 {
        let _ = writeln!(
            s,
            "  (forwarding runs on worker threads: one per core unless --workers says otherwise)"
        );
    }
    let _ = writeln!(
        s,
        "  stack address     {}{}",
        cfg.addr,
        cfg.addr6.map(|a| format!("  {a}")).unwrap_or_default()
    );
    if cfg.no_configure {
        let _ = writeln!(
            s,
            "  host side         as configured on {} (--no-configure)",
            cfg.iface
        );
    } else {
        let v6 = if cfg.addr6.is_some() {
            format!("  {}", cfg.host_addr6)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  host side         {}{v6} on {}",
            cfg.host_addr, cfg.iface
        );
    }
    if let Some(ns) = &cfg.netns {
        let _ = writeln!(
            s,
            "  namespace         {ns}{} (tcpd and its sockets stay in their own)",
            if cfg.default_route {
                ", default routes via the stack"
            } else {
                ""
            }
        );
    } else if cfg.default_route {
        if let Some(m) = cfg.outbound.mark {
            let _ = writeln!(
                s,
                "  default routes    via {} in table {m}; tcpd's own sockets (mark {m}) skip it",
                cfg.iface
            );
        }
    }
    for (name, port) in cfg.service_ports() {
        let what = match name {
            "echo" => "echo (RFC 862)",
            "discard" => "discard (RFC 863)",
            _ => "HTTP/1.1",
        };
        let _ = writeln!(s, "  {what:<18}port {port}");
    }
    for r in &cfg.forward.rules {
        let _ = writeln!(s, "  forward           {r}");
    }
    if cfg.forward.transparent {
        let f = &cfg.forward;
        let list = |v: &[crate::config::IpNet]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut what = String::from("any destination reaching the TUN");
        if !f.allow.is_empty() {
            let _ = write!(what, ", allow {}", list(&f.allow));
        }
        if !f.deny.is_empty() {
            let _ = write!(what, ", deny {}", list(&f.deny));
        }
        let _ = writeln!(s, "  transparent       {what}");
    }
    if let Some(u) = &cfg.forward.upstream {
        let _ = writeln!(s, "  via SOCKS5 proxy  {u}");
    }
    if cfg.forward.active() {
        let f = &cfg.forward;
        let _ = writeln!(
            s,
            "  upstream limits   connect timeout {} s, idle timeout {}",
            f.connect_timeout.as_secs(),
            f.idle_timeout
                .map_or("off".to_string(), |d| format!("{} s", d.as_secs()))
        );
    }
    if let Some(p) = &cfg.pcap {
        let _ = writeln!(
            s,
            "  recording         {} (+ {})",
            p.display(),
            sidecar_path(p).display()
        );
    }
    if cfg.fault.is_active() {
        let f = &cfg.fault;
        let _ = writeln!(
            s,
            "  faults            drop {} dup {} reorder {} delay {} ms (seed {})",
            f.drop, f.dup, f.reorder, f.delay_ms, f.seed
        );
    }
    let _ = writeln!(s, "try:");
    // From inside the sandbox, with --netns.
    let inside = cfg
        .netns
        .as_ref()
        .map(|n| format!("{} ", n.exec_hint()))
        .unwrap_or_default();
    let _ = writeln!(s, "  {inside}ping {}", cfg.addr);
    if cfg.echo_port != 0 {
        let _ = writeln!(s, "  {inside}nc {} {}", cfg.addr, cfg.echo_port);
    }
    if cfg.http_port != 0 {
        let port = if cfg.http_port == 80 {
            String::new()
        } else {
            format!(":{}", cfg.http_port)
        };
        let _ = writeln!(s, "  {inside}curl http://{}{port}/", cfg.addr);
        if let Some(a6) = cfg.addr6 {
            let _ = writeln!(s, "  {inside}curl http://[{a6}]{port}/");
        }
    }
    let _ = write!(
        s,
        "stop with Ctrl-C (SIGINT) or SIGTERM; SIGUSR1 logs the counters and connections"
    );
    s
}

/// Writes the banner to stdout. A stdout that cannot take it (closed,
/// a full disk, `> /dev/full`) must not stop the daemon: `println!` would
/// panic there, so the error is only logged.
fn print_banner(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        debug!("cannot write the banner to stdout: {e}");
    }
}

/// Services by port.
type ServiceList = Vec<(u16, Arc<dyn Service>)>;

fn services(cfg: &Config, board: &Arc<StatusBoard>) -> Result<ServiceList, Error> {
    let mut v: ServiceList = Vec::new();
    if cfg.echo_port != 0 {
        v.push((cfg.echo_port, Arc::new(Echo)));
    }
    if cfg.discard_port != 0 {
        v.push((cfg.discard_port, Arc::new(Discard)));
    }
    if cfg.http_port != 0 {
        let mut h = cfg.http.clone();
        h.root = cfg.http_root.clone();
        let svc = HttpService::new(h, board.clone()).map_err(Error::new)?;
        v.push((cfg.http_port, Arc::new(svc)));
    }
    Ok(v)
}

/// Runs the daemon with `cfg` until SIGINT/SIGTERM; on return the interface
/// tcpd created is gone and the pcap is flushed.
pub fn run(mut cfg: Config) -> Result<(), Error> {
    cfg.validate().map_err(Error::new)?;
    cfg.workers = cfg.effective_workers();
    // Resolve upstream names once, before anything is created.
    let fwd = if cfg.forward.active() {
        raise_nofile_limit();
        Some(Arc::new(
            crate::forward::Forwarding::new(&cfg.forward, cfg.outbound.clone())
                .map_err(Error::new)?,
        ))
    } else {
        None
    };
    // Find out now, before anything is configured, whether the reactor's
    // nice value can be had; set it only once the other threads exist.
    let nice0 = thread_nice();
    if cfg.reactor_nice != 0 {
        set_thread_nice(cfg.reactor_nice)
            .and_then(|()| set_thread_nice(nice0))
            .map_err(|e| {
                Error::new(format!(
                    "cannot set --reactor-nice {}: {e} (a negative value needs CAP_SYS_NICE)",
                    cfg.reactor_nice
                ))
            })?;
    }
    let tun = TunDevice::open(&mut cfg)?;
    cfg.mtu = tun.mtu();
    let clock = Clock::new();
    let mut dev: Box<dyn Device> = Box::new(tun);
    if cfg.fault.is_active() {
        dev = Box::new(FaultDevice::new(dev, cfg.fault));
    }
    if let Some(path) = &cfg.pcap {
        let fail = |e: std::io::Error| Error::new(format!("--pcap {}: {e}", path.display()));
        let side = sidecar_path(path);
        std::fs::write(&side, sidecar_json(&cfg, &clock, cfg.mtu, cfg.workers))
            .map_err(|e| Error::new(format!("cannot write {}: {e}", side.display())))?;
        dev = Box::new(PcapTap::new(dev, path, clock, cfg.pcap_queue, 65535).map_err(fail)?);
    }
    let template = Status {
        iface: cfg.iface.clone(),
        addrs: cfg.stack_addrs(),
        mtu: cfg.mtu,
        services: cfg.service_ports(),
        ..Status::default()
    };
    let board = StatusBoard::new(template.clone());
    let services = services(&cfg, &board)?;
    let reactor = Reactor::new(&cfg, dev, clock, services, board, template, fwd)?;
    if cfg.reactor_nice != 0 {
        // Worker and pcap threads are running: only this one (the
        // reactor's) changes.
        match set_thread_nice(cfg.reactor_nice) {
            Ok(()) => info!("reactor thread at nice {}", cfg.reactor_nice),
            Err(e) => tracing::warn!("cannot set --reactor-nice {}: {e}", cfg.reactor_nice),
        }
    }
    print_banner(&banner(&cfg, cfg.mtu));
    let mut dev = reactor.run()?;
    dev.flush();
    drop(dev);
    info!(
        "stopped; {} removed",
        if cfg.no_configure {
            "nothing"
        } else {
            "what tcpd configured was"
        }
    );
    Ok(())
}

/// Raises the soft limit of open files to the hard one: each forwarded
/// connection holds a kernel socket, and the usual soft limit (1024) would
/// cap tcpd at about a thousand of them (nginx's `worker_rlimit_nofile`
/// and Go's runtime do the same).
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                debug!("cannot raise the open-file limit");
            }
        }
    }
}

/// The calling thread's nice value (Linux keeps one per thread).
fn thread_nice() -> i32 {
    // SAFETY: plain integer arguments; gettid names the calling thread.
    // getpriority may return -1 as a value: errno is not needed, since a
    // failure (impossible for the calling thread) only makes the restore
    // in `run` aim at -1.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

/// Sets the calling thread's nice value (Linux: PRIO_PROCESS with a thread
/// id changes that thread only).
fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: plain integer arguments; gettid names the calling thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
