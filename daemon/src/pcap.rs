//! A pcap tap wrapping a [`Device`]: every packet the stack reads and
//! writes is recorded, off the hot path.
//!
//! On the reactor thread a packet is only copied into a pooled buffer and
//! handed over a bounded channel ([`crate::Config::pcap_queue`] records) to
//! a writer thread, which writes classic pcap (link type RAW = 101: each
//! record is a bare IPv4 or IPv6 packet; microsecond timestamps), flushes
//! every 200 ms and on exit, and hands the buffers back.
//!
//! The reactor never waits for the writer: a writer that cannot keep up (a
//! slow disk, a FIFO nobody reads) must not stop the stack, nor keep it
//! from seeing SIGINT/SIGTERM. When the channel is full the record is
//! dropped, as a packet capture drops what its buffer cannot take (as Linux
//! does for a full `AF_PACKET` receive buffer, counted in `tp_drops`, which
//! tcpdump reports as "dropped by kernel"). The loss is not silent: the
//! first drop logs a warning, every drop counts in `pcap_lost` (in
//! `/stats`, SIGUSR1 and the counters logged at exit), and the shutdown
//! logs how many packets the capture lacks. A capture with holes does not
//! replay byte for byte.
//!
//! A record's timestamp is `start_unix_us + now`, where `now` is exactly the
//! endpoint time (µs) the packet was handled or produced at; see
//! [`crate::clock::Clock`].
//!
//! # Sidecar file
//!
//! Next to `FILE` tcpd writes `FILE.json` ([`sidecar_path`]) with what a
//! replay needs to rebuild the same endpoint and services. One JSON object:
//!
//! ```json
//! {
//!   "format": "tcpd-pcap-sidecar", "version": 1,
//!   "seed": 42,                      // tcp::Config::seed
//!   "start_unix_us": 1763800000000000, // pcap ts - this = endpoint now (µs)
//!   "iface": "tun0", "mtu": 1500,
//!   "addrs": ["10.0.0.2", "fd00::2"], // the stack's addresses
//!   "host_addr": "10.0.0.1/24", "host_addr6": "fd00::1/64",
//!   "services": [{"name": "echo", "port": 7}, ...],
//!   "http_root": null,                // or the directory
//!   "workers": 2, "nodelay": true, "backlog": 1024,
//!   "rx_budget": 128, "read_chunk": 65536, "pool_buffers": 256,
//!   "http": {"max_header_bytes": 8192, "max_headers": 64,
//!            "max_requests": 1000, "max_body_bytes": 65536,
//!            "max_bytes_n": 1099511627776},
//!   "fault": {"drop": 0.0, "dup": 0.0, "reorder": 0.0, "corrupt": 0.0,
//!             "delay_ms": 0, "seed": 1},
//!   "tcp": {"send_buffer": 262144, "recv_buffer": 262144, ... every
//!           numeric/bool field of tcp::Config; durations in µs}
//! }
//! ```
//!
//! `rx_budget`, `read_chunk`, `pool_buffers` and `http` were added later
//! (still version 1): a reader takes [`Config::default`]'s values when they
//! are missing, which is what the daemon ran with before they were written.
//!
//! With `"workers": 0` the handlers ran inline through
//! [`crate::services::InlineHost`], as a replay runs them, so the replay
//! sees the same handler calls in the same order; with worker threads the
//! timing of the handlers' answers depends on the scheduler.
//!
//! The packets in the pcap are those the stack saw: the tap sits between
//! the stack and the fault injector, so injected faults are already applied.

use crate::clock::Clock;
use crate::config::Config;
use crate::device::Device;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::warn;

struct Record {
    ts_us: u64,
    buf: Vec<u8>,
}

/// The pcap-recording middleware.
pub struct PcapTap<D> {
    inner: D,
    clock: Clock,
    tx: Option<Sender<Record>>,
    pool: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<io::Result<u64>>>,
    /// A buffer of a record the full channel refused, for the next one.
    spare: Option<Vec<u8>>,
    /// Capacity of the channel, for messages.
    queue: usize,
    /// Records handed to the writer.
    records: u64,
    /// Packets not recorded (channel full, or the writer gone).
    lost: u64,
    /// The first loss was logged.
    warned: bool,
    /// The loss was summed up at the end of the capture.
    reported: bool,
    path: PathBuf,
}

/// How long dropping a tap waits for its writer before leaving it behind
/// (a writer stuck on a FIFO nobody reads would wait forever).
const DROP_JOIN_WAIT: Duration = Duration::from_secs(2);

/// The sidecar's path for a pcap at `pcap`: `pcap` with `.json` appended.
pub fn sidecar_path(pcap: &Path) -> PathBuf {
    let mut s = pcap.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

impl<D: Device> PcapTap<D> {
    /// Creates `path` (truncating it) and starts the writer thread.
    pub fn new(
        inner: D,
        path: &Path,
        clock: Clock,
        queue: usize,
        snaplen: u32,
    ) -> io::Result<Self> {
        let file = File::create(path)?;
        let header = PcapHeader {
            datalink: DataLink::RAW,
            snaplen,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(BufWriter::with_capacity(256 * 1024, file), header)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let (tx, rx) = bounded::<Record>(queue);
        let (pool_tx, pool_rx) = bounded::<Vec<u8>>(queue + 64);
        let writer = std::thread::Builder::new()
            .name("tcpd-pcap".into())
            .spawn(move || {
                let mut written = 0u64;
                let mut dirty = false;
                let mut last_flush = Instant::now();
                loop {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(r) => {
                            let secs = Duration::from_micros(r.ts_us);
                            let pkt = PcapPacket::new(secs, r.buf.len() as u32, &r.buf[..])
                                .map_err(|e| io::Error::other(e.to_string()))?;
                            w.write_packet(&pkt)
                                .map_err(|e| io::Error::other(e.to_string()))?;
                            written += 1;
                            dirty = true;
                            let _ = pool_tx.try_send(r.buf);
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    if dirty && last_flush.elapsed() >= Duration::from_millis(200) {
                        w.flush().map_err(|e| io::Error::other(e.to_string()))?;
                        dirty = false;
                        last_flush = Instant::now();
                    }
                }
                w.flush().map_err(|e| io::Error::other(e.to_string()))?;
                Ok(written)
            })?;
        Ok(PcapTap {
            inner,
            clock,
            tx: Some(tx),
            pool: pool_rx,
            writer: Some(writer),
            spare: None,
            queue,
            records: 0,
            lost: 0,
            warned: false,
            reported: false,
            path: path.to_path_buf(),
        })
    }

    /// Hands a copy of `pkt` to the writer; never blocks (see the module
    /// documentation): a full channel drops the record and counts it.
    fn record(&mut self, now: Instant, pkt: &[u8]) {
        let Some(tx) = &self.tx else {
            self.lost += 1;
            return;
        };
        if tx.is_full() {
            // Spare the copy: it could not be sent.
            self.lost_to_full_queue();
            return;
        }
        let mut buf = self
            .spare
            .take()
            .or_else(|| self.pool.try_recv().ok())
            .unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(pkt);
        let rec = Record {
            ts_us: self.clock.unix_us(now),
            buf,
        };
        match tx.try_send(rec) {
            Ok(()) => self.records += 1,
            Err(TrySendError::Full(rec)) => {
                self.spare = Some(rec.buf);
                self.lost_to_full_queue();
            }
            Err(TrySendError::Disconnected(_)) => {
                self.lost += 1;
                warn!(
                    "pcap writer stopped; no more packets are recorded in {} (the error follows at exit)",
                    self.path.display()
                );
                self.tx = None;
            }
        }
    }

    /// Counts a record dropped on a full channel; the first one is logged.
    fn lost_to_full_queue(&mut self) {
        self.lost += 1;
        if !self.warned {
            self.warned = true;
            warn!(
                "pcap: the writer of {} cannot keep up (all {} queued records wait for it: a slow                  disk, or a pipe nobody reads); packets are now dropped from the capture, which                  will be incomplete and will not replay (counted in pcap_lost)",
                self.path.display(),
                self.queue
            );
        }
    }

    /// At the end of the capture: says how many packets it lacks (once).
    fn report_loss(&mut self) {
        if self.reported {
            return;
        }
        self.reported = true;
        if self.lost > 0 {
            warn!(
                "pcap: {} is incomplete: {} of {} packets were not recorded (pcap_lost)",
                self.path.display(),
                self.lost,
                self.lost + self.records
            );
        }
    }

    /// Packets handed to the writer so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Packets not recorded so far (see the module documentation).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Stops the writer after it wrote everything queued; returns the
    /// number of records written.
    pub fn finish(&mut self) -> io::Result<u64> {
        self.tx = None;
        self.report_loss();
        match self.writer.take() {
            Some(h) => h
                .join()
                .map_err(|_| io::Error::other("pcap writer panicked"))?,
            None => Ok(0),
        }
    }
}

impl<D: Device> Device for PcapTap<D> {
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.recv(now, buf)?;
        self.record(now, &buf[..n]);
        Ok(n)
    }
    fn send(&mut self, now: Instant, pkt: &[u8]) -> io::Result<()> {
        self.inner.send(now, pkt)?;
        self.record(now, pkt);
        Ok(())
    }
    fn raw_fd(&self) -> RawFd {
        self.inner.raw_fd()
    }
    fn poll_at(&self) -> Option<Instant> {
        self.inner.poll_at()
    }
    fn service(&mut self, now: Instant) -> io::Result<()> {
        self.inner.service(now)
    }
    fn has_due_rx(&self, now: Instant) -> bool {
        self.inner.has_due_rx(now)
    }
    fn counters(&self, out: &mut Vec<(&'static str, u64)>) {
        self.inner.counters(out);
        out.extend([("pcap_records", self.records), ("pcap_lost", self.lost)]);
    }
    fn flush(&mut self) {
        self.inner.flush();
        match self.finish() {
            Ok(n) => tracing::debug!(records = n, "pcap written"),
            Err(e) => warn!("pcap: {e}"),
        }
    }
    fn begin_flush(&mut self) {
        self.inner.begin_flush();
        // The writer drains the channel, flushes and ends when the sender is gone.
        self.tx = None;
        self.report_loss();
    }
    fn flushed(&self) -> bool {
        self.inner.flushed() && self.writer.as_ref().is_none_or(|h| h.is_finished())
    }
    fn restore_host(&mut self) {
        self.inner.restore_host()
    }
}

impl<D> Drop for PcapTap<D> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.writer.take() {
            // Bounded: the device below (restoring the host) is dropped
            // next, and a stuck writer must not keep it from that.
            let until = Instant::now() + DROP_JOIN_WAIT;
            while !h.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                warn!(
                    "pcap: the writer of {} is stuck; leaving it (the capture is incomplete)",
                    self.path.display()
                );
            }
        }
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The sidecar JSON for a capture (format in the module documentation).
pub fn sidecar_json(cfg: &Config, clock: &Clock, mtu: usize, workers: usize) -> String {
    let t = cfg.tcp_config();
    let addrs: Vec<String> = cfg
        .stack_addrs()
        .iter()
        .map(|a| json_str(&a.to_string()))
        .collect();
    let services: Vec<String> = cfg
        .service_ports()
        .iter()
        .map(|(n, p)| format!("{{\"name\": {}, \"port\": {p}}}", json_str(n)))
        .collect();
    let root = match &cfg.http_root {
        Some(p) => json_str(&p.display().to_string()),
        None => "null".into(),
    };
    let f = &cfg.fault;
    let ka = match t.keepalive {
        Some(k) => format!(
            "{{\"idle_us\": {}, \"interval_us\": {}, \"count\": {}}}",
            k.idle.as_micros(),
            k.interval.as_micros(),
            k.count
        ),
        None => "null".into(),
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "{{\n  \"format\": \"tcpd-pcap-sidecar\",\n  \"version\": 1,\n  \"seed\": {seed},\n  \
         \"start_unix_us\": {start},\n  \"iface\": {iface},\n  \"mtu\": {mtu},\n  \"addrs\": [{addrs}],\n  \
         \"host_addr\": {ha},\n  \"host_addr6\": {ha6},\n  \"services\": [{services}],\n  \
         \"http_root\": {root},\n  \"workers\": {workers},\n  \"nodelay\": {nodelay},\n  \"backlog\": {backlog},\n  \
         \"rx_budget\": {rxb}, \"read_chunk\": {rc}, \"pool_buffers\": {pb},\n  \
         \"http\": {{\"max_header_bytes\": {hmhb}, \"max_headers\": {hmh}, \"max_requests\": {hmr}, \
         \"max_body_bytes\": {hmbb}, \"max_bytes_n\": {hmbn}, \"header_timeout_us\": {hht}, \
         \"idle_timeout_us\": {hit}, \"send_timeout_us\": {hst}, \"date\": {hdate}}},\n  \
         \"fault\": {{\"drop\": {fd}, \"dup\": {fu}, \"reorder\": {fr}, \"corrupt\": {fc}, \"delay_ms\": {fdl}, \"seed\": {fs}}},\n  \
         \"tcp\": {{\"max_connections\": {mc}, \"send_buffer\": {sb}, \"recv_buffer\": {rb}, \"max_ooo_ranges\": {mo}, \
         \"buffer_pool_bytes\": {bp}, \"delayed_ack_us\": {da}, \"min_rto_us\": {minrto}, \"initial_rto_us\": {irto}, \
         \"max_rto_us\": {maxrto}, \"time_wait_us\": {tw}, \"user_timeout_us\": {ut}, \"syn_retries\": {sr}, \
         \"synack_retries\": {sar}, \"keepalive\": {ka}, \"nagle\": {nagle}, \"initial_window\": {iw}, \
         \"window_scaling\": {ws}, \"timestamps\": {ts}, \"sack\": {sack}, \"syn_cookies\": {sc}, \
         \"syn_backlog\": {sbl}, \"challenge_ack_limit\": {cal}, \"ephemeral_ports\": [{ep0}, {ep1}], \
         \"max_control_queue\": {mcq}, \"ttl\": {ttl}, \"max_passive\": {mp}, \
         \"max_passive_per_source\": {mps}}}\n}}\n",
        seed = cfg.seed,
        start = clock.start_unix_us(),
        iface = json_str(&cfg.iface),
        ha = json_str(&cfg.host_addr.to_string()),
        ha6 = json_str(&cfg.host_addr6.to_string()),
        addrs = addrs.join(", "),
        services = services.join(", "),
        nodelay = cfg.nodelay,
        backlog = cfg.backlog,
        rxb = cfg.rx_budget,
        rc = cfg.read_chunk,
        pb = cfg.pool_buffers,
        hmhb = cfg.http.max_header_bytes,
        hmh = cfg.http.max_headers,
        hmr = cfg.http.max_requests,
        hmbb = cfg.http.max_body_bytes,
        hmbn = cfg.http.max_bytes_n,
        fd = f.drop,
        fu = f.dup,
        fr = f.reorder,
        fc = f.corrupt,
        fdl = f.delay_ms,
        fs = f.seed,
        mc = t.max_connections,
        sb = t.send_buffer,
        rb = t.recv_buffer,
        mo = t.max_ooo_ranges,
        bp = t.buffer_pool_bytes,
        da = t.delayed_ack.as_micros(),
        minrto = t.min_rto.as_micros(),
        irto = t.initial_rto.as_micros(),
        maxrto = t.max_rto.as_micros(),
        tw = t.time_wait.as_micros(),
        ut = t.user_timeout.as_micros(),
        sr = t.syn_retries,
        sar = t.synack_retries,
        nagle = t.nagle,
        iw = t.initial_window,
        ws = t.window_scaling,
        ts = t.timestamps,
        sack = t.sack,
        sc = t.syn_cookies,
        sbl = t.syn_backlog,
        cal = t.challenge_ack_limit,
        ep0 = t.ephemeral_ports.0,
        ep1 = t.ephemeral_ports.1,
        mcq = t.max_control_queue,
        mp = t.max_passive,
        mps = t.max_passive_per_source,
        hht = opt_us(cfg.http.header_timeout),
        hit = opt_us(cfg.http.idle_timeout),
        hst = opt_us(cfg.http.send_timeout),
        hdate = cfg.http.date,
        ttl = t.ttl,
    );
    s
}

/// A timeout for the sidecar: µs, or `null` when off.
fn opt_us(t: Option<std::time::Duration>) -> String {
    t.map_or_else(|| "null".into(), |d| d.as_micros().to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Null;
    impl Device for Null {
        fn recv(&mut self, _now: Instant, buf: &mut [u8]) -> io::Result<usize> {
            buf[..4].copy_from_slice(&[0x45, 0, 0, 4]);
            Ok(4)
        }
        fn send(&mut self, _now: Instant, _pkt: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn raw_fd(&self) -> RawFd {
            -1
        }
    }

    use crate::testdir::TempDir;

    #[test]
    fn records_both_directions_with_raw_link_type() {
        let dir = TempDir::new("pcap-test");
        let path = dir.0.join("t.pcap");
        let clock = Clock::new();
        let mut tap = PcapTap::new(Null, &path, clock, 64, 65535).unwrap();
        let mut buf = [0u8; 16];
        let t = clock.start() + Duration::from_micros(1234);
        for _ in 0..10 {
            tap.recv(t, &mut buf).unwrap();
            tap.send(t, &[0x60, 1, 2]).unwrap();
        }
        tap.flush();
        assert_eq!((tap.records(), tap.lost()), (20, 0));
        let mut r = pcap_file::pcap::PcapReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(r.header().datalink, DataLink::RAW);
        let mut n = 0;
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            assert_eq!(
                p.timestamp().as_micros() as u64,
                clock.start_unix_us() + 1234
            );
            assert_eq!(p.data()[0] >> 4, if n % 2 == 0 { 4 } else { 6 });
            n += 1;
        }
        assert_eq!(n, 20);
        let cfg = Config::default();
        let js = sidecar_json(&cfg, &clock, 1500, 2);
        assert!(js.contains("\"seed\": 0"));
        assert!(js.contains("\"addrs\": [\"10.0.0.2\", \"fd00::2\"]"));
    }

    #[test]
    fn begin_flush_completes_without_blocking() {
        let dir = TempDir::new("pcap-flush");
        let path = dir.0.join("f.pcap");
        let clock = Clock::new();
        let mut tap = PcapTap::new(Null, &path, clock, 64, 65535).unwrap();
        let mut buf = [0u8; 16];
        for _ in 0..50 {
            tap.recv(clock.start(), &mut buf).unwrap();
        }
        assert!(!tap.flushed(), "the writer runs until told to stop");
        tap.begin_flush();
        let until = Instant::now() + Duration::from_secs(5);
        while !tap.flushed() {
            assert!(Instant::now() < until, "the pcap writer did not finish");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Everything queued is on disk before flush() is called.
        let mut r = pcap_file::pcap::PcapReader::new(File::open(&path).unwrap()).unwrap();
        let mut n = 0;
        while let Some(p) = r.next_packet() {
            p.unwrap();
            n += 1;
        }
        assert_eq!(n, 50);
        tap.flush();
    }

    /// A writer stuck on a FIFO nobody reads: the tap drops and counts
    /// what the full queue cannot take, and never waits for the writer.
    #[test]
    fn a_stuck_writer_never_blocks_the_caller() {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = TempDir::new("pcap-stuck");
        let path = dir.0.join("fifo.pcap");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A reader end that reads nothing yet (a non-blocking open needs no writer).
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let clock = Clock::new();
        let tap = PcapTap::new(Null, &path, clock, 4, 65535).unwrap();
        // 2000 packets of 60 000 bytes: far more than the pipe (64 KiB),
        // the writer's buffer (256 KiB) and the queue (4) hold.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tap = tap;
            let pkt = vec![0x45u8; 60_000];
            for _ in 0..2000 {
                tap.send(clock.start(), &pkt).unwrap();
            }
            let _ = done_tx.send(tap);
        });
        let mut tap = done_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the tap waited for a stuck pcap writer");
        assert!(tap.lost() > 1000, "lost {}", tap.lost());
        assert_eq!(tap.records() + tap.lost(), 2000);
        let mut v = Vec::new();
        tap.counters(&mut v);
        assert!(v.contains(&("pcap_lost", tap.lost())), "{v:?}");
        tap.begin_flush();
        assert!(!tap.flushed(), "the writer is still stuck");
        // Read the FIFO dry: the writer gets through what was queued, ends
        // and closes its end (end of file here).
        let until = Instant::now() + Duration::from_secs(20);
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            assert!(Instant::now() < until, "the writer did not finish");
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        while !tap.flushed() {
            assert!(Instant::now() < until, "the writer did not finish");
            std::thread::sleep(Duration::from_millis(1));
        }
        let want = 24 + tap.records() as usize * (16 + 60_000);
        assert_eq!(got, want, "the records handed over are all written");
        assert_eq!(tap.finish().unwrap(), tap.records());
    }
}
