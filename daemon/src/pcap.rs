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
//! replay needs to rebuild the same endpoint and services: a
//! [`crate::sidecar::Sidecar`] (the format is described there).
//!
//! So were `"offload"` (top level: the device did TSO/GSO and checksum
//! offload) and `tcp.tso_max`, `tcp.checksum_offload` (the endpoint's side
//! of it). Missing, they mean no offload: captures were recorded without it
//! before. With offload the stack read and wrote super-packets of up to
//! 64 KiB with partial checksums; the capture holds what the wire carries
//! instead (each cut into MTU-sized segments with real checksums, see
//! [`Segmenter`]), and the companion file [`gso_path`] says which records
//! were one packet for the stack.
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
use crate::offload::Segmenter;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use pcap_file::pcap::{PcapHeader, PcapWriter};
use pcap_file::DataLink;
use pcap_file::Endianness;
use std::fs::File;
use std::io::Write as _;
use std::io::{self, BufWriter};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::warn;

struct Record {
    ts_us: u64,
    buf: Vec<u8>,
    /// TSO/GSO segment size of a super-packet (0: none), see [`Segmenter`].
    gso_size: u16,
    /// The TCP checksum is partial (pseudo-header sum only).
    partial: bool,
}

/// The bytes of record buffers (queued, pooled or spare) a tap may hold per
/// record of its queue: with offload a record may be a 64 KiB super-packet,
/// and the queue's memory stays bounded by `queue * RECORD_BYTES` (32 MiB
/// for the default queue) rather than `queue * 64 KiB`. A record that would
/// need more is dropped and counted as lost.
const RECORD_BYTES: usize = 4096;

/// With offload, the size of the buffers for records that are not
/// super-packets (an MTU-sized packet fits).
const SMALL_RECORD: usize = 2048;

/// The companion file of a capture recorded with offload: `pcap` with
/// `.gso` appended. One line `FIRST COUNT` per packet the stack read or
/// wrote as one TSO/GSO super-packet and the capture holds as `COUNT`
/// segments, records `FIRST..FIRST+COUNT` (0-based, in file order); a
/// replay feeds and compares such a group as the one packet the stack saw.
pub fn gso_path(pcap: &Path) -> PathBuf {
    let mut s = pcap.as_os_str().to_owned();
    s.push(".gso");
    PathBuf::from(s)
}

/// The pcap-recording middleware.
pub struct PcapTap<D> {
    inner: D,
    clock: Clock,
    tx: Option<Sender<Record>>,
    pool: Receiver<Vec<u8>>,
    /// With offload: buffers of `record_max` bytes, for super-packets (the
    /// small ones, of [`SMALL_RECORD`] bytes, go back to `pool`), so that
    /// an ACK does not hold 64 KiB of the budget.
    big_pool: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<io::Result<u64>>>,
    /// A buffer of a record the full channel refused, for the next one.
    spare: Option<Vec<u8>>,
    /// Capacity of the channel, for messages.
    queue: usize,
    /// Records handed to the writer.
    records: u64,
    /// Packets not recorded (channel full, or the writer gone).
    lost: u64,
    /// Capacity of all record buffers in existence (the writer subtracts
    /// what it frees), bounded by `queue * RECORD_BYTES`.
    held: Arc<AtomicUsize>,
    /// The first loss was logged.
    warned: bool,
    /// The loss was summed up at the end of the capture.
    reported: bool,
    path: PathBuf,
    /// Capacity given to a buffer that grows: 64 KiB with offload (any
    /// super-packet), else 0 (the packet's own size).
    record_max: usize,
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
        // pcap-file writes the file header; the records the writer thread
        // writes itself, each from its parts (a segment's headers and its
        // payload, a slice of the super-packet), so that the payload is
        // copied once, into the buffer.
        let w = PcapWriter::with_header(BufWriter::with_capacity(256 * 1024, file), header)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let big_endian = w.endianness() == Endianness::Big;
        let mut w = w.into_inner();
        // With offload the stack's packets are TSO/GSO super-packets: the
        // writer cuts them into the segments the wire carries (so the capture
        // reads like one without offload) and lists the groups in the
        // companion file, for replays. A stale one from an earlier run goes.
        let gso = gso_path(path);
        let mut groups = if inner.offload() {
            let f = File::create(&gso).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", gso.display()))
            })?;
            Some(BufWriter::new(f))
        } else {
            let _ = std::fs::remove_file(&gso);
            None
        };
        let record_max = if inner.offload() { 1 << 16 } else { 0 };
        let (tx, rx) = bounded::<Record>(queue);
        let (pool_tx, pool_rx) = bounded::<Vec<u8>>(queue + 64);
        let (big_tx, big_rx) = bounded::<Vec<u8>>(queue + 64);
        let held = Arc::new(AtomicUsize::new(0));
        let freed = held.clone();
        let writer = std::thread::Builder::new()
            .name("tcpd-pcap".into())
            .spawn(move || {
                let mut seg = Segmenter::new();
                let mut written = 0u64;
                let mut dirty = false;
                let mut last_flush = Instant::now();
                loop {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(mut r) => {
                            let ts = Duration::from_micros(r.ts_us);
                            let n =
                                seg.segment_parts(&mut r.buf, r.gso_size, r.partial, |h, p| {
                                    // A classic pcap record header: seconds,
                                    // microseconds, captured and original length.
                                    let len = (h.len() + p.len()) as u32;
                                    let f = [ts.as_secs() as u32, ts.subsec_micros(), len, len];
                                    let mut rh = [0u8; 16];
                                    for (i, v) in f.iter().enumerate() {
                                        let b = if big_endian {
                                            v.to_be_bytes()
                                        } else {
                                            v.to_le_bytes()
                                        };
                                        rh[4 * i..4 * i + 4].copy_from_slice(&b);
                                    }
                                    w.write_all(&rh)?;
                                    w.write_all(h)?;
                                    w.write_all(p)
                                })?;
                            if n > 1 {
                                if let Some(g) = &mut groups {
                                    writeln!(g, "{written} {n}")?;
                                }
                            }
                            written += n as u64;
                            dirty = true;
                            let cap = r.buf.capacity();
                            let back = if record_max > 0 && cap >= record_max {
                                &big_tx
                            } else {
                                &pool_tx
                            };
                            if back.try_send(r.buf).is_err() {
                                freed.fetch_sub(cap, Ordering::Relaxed);
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    if dirty && last_flush.elapsed() >= Duration::from_millis(200) {
                        w.flush()?;
                        if let Some(g) = &mut groups {
                            g.flush()?;
                        }
                        dirty = false;
                        last_flush = Instant::now();
                    }
                }
                w.flush()?;
                if let Some(g) = &mut groups {
                    g.flush()?;
                }
                Ok(written)
            })?;
        Ok(PcapTap {
            inner,
            clock,
            tx: Some(tx),
            pool: pool_rx,
            big_pool: big_rx,
            writer: Some(writer),
            spare: None,
            queue,
            records: 0,
            lost: 0,
            held,
            warned: false,
            reported: false,
            path: path.to_path_buf(),
            record_max,
        })
    }

    /// Hands a copy of `pkt` to the writer; never blocks (see the module
    /// documentation): a full channel drops the record and counts it.
    /// `gso_size` and `partial` describe a super-packet (see [`Segmenter`]),
    /// which the writer cuts into segments.
    fn record(&mut self, now: Instant, pkt: &[u8], gso_size: u16, partial: bool) {
        let Some(tx) = &self.tx else {
            self.lost += 1;
            return;
        };
        if tx.is_full() {
            // Spare the copy: it could not be sent.
            self.lost_to_full_queue();
            return;
        }
        let big = self.record_max > 0 && pkt.len() > SMALL_RECORD;
        let pool = if big { &self.big_pool } else { &self.pool };
        let mut buf = match self.spare.take() {
            Some(b) if b.capacity() >= pkt.len() => b,
            Some(b) => {
                self.held.fetch_sub(b.capacity(), Ordering::Relaxed);
                drop(b);
                pool.try_recv().unwrap_or_default()
            }
            None => pool.try_recv().unwrap_or_default(),
        };
        buf.clear();
        if buf.capacity() < pkt.len() {
            // Growing a buffer (or making a new one): within the budget only.
            // With offload a buffer grows at once to the largest record, so
            // that every buffer in the pool takes any record: otherwise, with
            // the budget spent, small buffers would be refused their growth
            // again and again while the queue is empty.
            let cap = match (big, self.record_max) {
                (true, max) => pkt.len().max(max),
                (false, 0) => pkt.len(),
                (false, _) => SMALL_RECORD,
            };
            let grow = cap - buf.capacity();
            let held = self.held.load(Ordering::Relaxed);
            if held + grow > self.queue.max(1) * RECORD_BYTES {
                // Not kept as the spare: the next record takes a pool buffer.
                self.held.fetch_sub(buf.capacity(), Ordering::Relaxed);
                drop(buf);
                self.lost_to_full_queue();
                return;
            }
            let before = buf.capacity();
            buf.reserve_exact(cap);
            self.held
                .fetch_add(buf.capacity() - before, Ordering::Relaxed);
        }
        buf.extend_from_slice(pkt);
        let rec = Record {
            ts_us: self.clock.unix_us(now),
            buf,
            gso_size,
            partial,
        };
        match tx.try_send(rec) {
            Ok(()) => self.records += 1,
            Err(TrySendError::Full(rec)) => {
                self.spare = Some(rec.buf);
                self.lost_to_full_queue();
            }
            Err(TrySendError::Disconnected(rec)) => {
                self.spare = Some(rec.buf);
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
                "pcap: the writer of {} cannot keep up (its queue of {} records or {} MiB is \
                 full: a slow disk, or a pipe nobody reads); packets are now dropped from the \
                 capture, which will be incomplete and will not replay (counted in pcap_lost)",
                self.path.display(),
                self.queue,
                (self.queue.max(1) * RECORD_BYTES) >> 20
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
        self.record(now, &buf[..n], 0, false);
        Ok(n)
    }
    fn send(&mut self, now: Instant, pkt: &[u8]) -> io::Result<()> {
        self.inner.send(now, pkt)?;
        self.record(now, pkt, 0, false);
        Ok(())
    }
    fn offload(&self) -> bool {
        self.inner.offload()
    }
    fn recv_offload(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        let (n, trusted) = self.inner.recv_offload(now, buf)?;
        let h = self.inner.last_rx_hdr();
        let gso = if h.gso_type == crate::offload::GSO_NONE {
            0
        } else {
            h.gso_size
        };
        self.record(
            now,
            &buf[..n],
            gso,
            h.flags & crate::offload::F_NEEDS_CSUM != 0,
        );
        Ok((n, trusted))
    }
    fn last_rx_hdr(&self) -> crate::offload::VnetHdr {
        self.inner.last_rx_hdr()
    }
    fn send_offload(&mut self, now: Instant, pkt: &[u8], t: &tcp::Transmit) -> io::Result<()> {
        self.inner.send_offload(now, pkt, t)?;
        self.record(now, pkt, t.segment_size, t.partial_checksum);
        Ok(())
    }
    fn raw_fd(&self) -> RawFd {
        self.inner.raw_fd()
    }
    fn syn_queue_fd(&self) -> Option<RawFd> {
        self.inner.syn_queue_fd()
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

/// The sidecar JSON for a capture ([`crate::sidecar::Sidecar`]).
pub fn sidecar_json(cfg: &Config, clock: &Clock, mtu: usize, workers: usize) -> String {
    crate::sidecar::Sidecar::of(cfg, clock.start_unix_us(), mtu, workers).to_json()
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
        let sc = crate::sidecar::Sidecar::parse(&js).unwrap();
        assert_eq!(sc.seed, 0);
        assert_eq!(sc.workers, 2);
        let addrs: Vec<String> = sc.addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.2", "fd00::2"]);
    }

    /// A device with offload: what the stack writes as one super-packet
    /// is recorded as its segments, listed as one group in `FILE.gso`.
    struct Offload;
    impl Device for Offload {
        fn recv(&mut self, _now: Instant, _buf: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn send(&mut self, _now: Instant, _pkt: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn raw_fd(&self) -> RawFd {
            -1
        }
        fn offload(&self) -> bool {
            true
        }
    }

    #[test]
    fn super_packets_are_recorded_as_their_segments() {
        let dir = TempDir::new("pcap-gso");
        let path = dir.0.join("g.pcap");
        let clock = Clock::new();
        let mut tap = PcapTap::new(Offload, &path, clock, 64, 65535).unwrap();
        assert!(tap.offload());
        // An ACK, then a 3-segment IPv4 TCP super-packet (20 + 20 + 3000).
        let mut ack = vec![0u8; 40];
        ack[0] = 0x45;
        ack[3] = 40;
        ack[9] = 6;
        ack[32] = 5 << 4;
        let mut big = vec![0u8; 3040];
        big[0] = 0x45;
        big[2..4].copy_from_slice(&3040u16.to_be_bytes());
        big[9] = 6;
        big[32] = 5 << 4;
        let t = tcp::Transmit {
            len: big.len(),
            segment_size: 1000,
            partial_checksum: true,
        };
        let none = tcp::Transmit {
            len: ack.len(),
            segment_size: 0,
            partial_checksum: false,
        };
        tap.send_offload(clock.start(), &ack, &none).unwrap();
        tap.send_offload(clock.start(), &big, &t).unwrap();
        tap.send_offload(clock.start(), &ack, &none).unwrap();
        tap.flush();
        assert_eq!((tap.records(), tap.lost()), (3, 0));
        let mut r = pcap_file::pcap::PcapReader::new(File::open(&path).unwrap()).unwrap();
        let mut lens = Vec::new();
        while let Some(p) = r.next_packet() {
            lens.push(p.unwrap().data().len());
        }
        assert_eq!(lens, [40, 1040, 1040, 1040, 40]);
        assert_eq!(std::fs::read_to_string(gso_path(&path)).unwrap(), "1 3\n");
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
