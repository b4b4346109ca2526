//! tcpload: a load generator and benchmark client for tcpd (and for the
//! kernel reference, `tcpd-refserver`).
//!
//! Every run stops by itself (a byte count, a request count or a duration)
//! and ends with a human line and one machine-readable line:
//! `RESULT test=<name> key=value ...`. Every socket has read and write
//! timeouts (`--io-timeout`), so a stalled peer ends the run with an error
//! instead of hanging it.
//!
//! Units: MB/s are 10^6 bytes per second; sizes on the command line take
//! binary suffixes (`100M` = 100 * 2^20 bytes).

use clap::{Parser, Subcommand};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};
use tools::pattern::{Checker, Pattern};
use tools::sys::{parse_size, percentile, raise_nofile};

/// Size of the buffers each client thread reads and writes with.
const IO_BUF: usize = 128 * 1024;
/// Largest request or response head read before giving up.
const MAX_HEAD: usize = 16 * 1024;
/// Upper bound on `rtt --count` (one u64 sample each is kept).
const MAX_RTT_COUNT: u64 = 20_000_000;
/// Upper bound on `--conns` and `--threads`.
const MAX_CLIENTS: usize = 4096;
/// Upper bound on `hold --count` in one process (the fd hard limit here
/// is 20 000; use several processes for more).
const MAX_HOLD: usize = 1_000_000;

/// Load generator and benchmark client for tcpd and the kernel reference.
#[derive(Parser, Debug)]
#[command(name = "tcpload", version, about)]
struct Cli {
    /// Read/write/connect timeout of every socket, in seconds
    #[arg(long, global = true, value_name = "S", default_value_t = 10.0)]
    io_timeout: f64,

    /// Give up an upload or download that takes longer than S seconds
    /// (a peer that trickles data never trips --io-timeout)
    #[arg(long, global = true, value_name = "S", default_value_t = 600.0)]
    max_secs: f64,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send N bytes to a discard service (RFC 863) and report MB/s
    Upload {
        /// Address of the discard service
        #[arg(long, value_name = "IP:PORT")]
        addr: SocketAddr,
        /// Total bytes to send (split over the connections), e.g. 1G
        #[arg(long, value_name = "N", value_parser = parse_size)]
        bytes: u64,
        /// Concurrent connections
        #[arg(long, value_name = "C", default_value_t = 1)]
        conns: usize,
    },
    /// GET /bytes/N over HTTP, check byte i == i % 251, report MB/s
    Download {
        /// Address of the HTTP service
        #[arg(long, value_name = "IP:PORT")]
        addr: SocketAddr,
        /// Total bytes to fetch (split over the connections), e.g. 1G
        #[arg(long, value_name = "N", value_parser = parse_size)]
        bytes: u64,
        /// Concurrent connections
        #[arg(long, value_name = "C", default_value_t = 1)]
        conns: usize,
    },
    /// 1-byte echo round trips (TCP_NODELAY); p50/p90/p99/max in µs
    Rtt {
        /// Address of the echo service
        #[arg(long, value_name = "IP:PORT")]
        addr: SocketAddr,
        /// Measured round trips
        #[arg(long, value_name = "K", default_value_t = 100_000)]
        count: u64,
        /// Unmeasured round trips first
        #[arg(long, value_name = "W", default_value_t = 1000)]
        warmup: u64,
    },
    /// Connect, echo 1 byte, close, with C concurrent clients; connections/s
    Cps {
        /// Address of the echo service
        #[arg(long, value_name = "IP:PORT")]
        addr: SocketAddr,
        /// Concurrent clients
        #[arg(long, value_name = "C", default_value_t = 8)]
        conns: usize,
        /// Seconds to run
        #[arg(long, value_name = "S", default_value_t = 5.0)]
        duration: f64,
    },
    /// HTTP requests per second, keep-alive or Connection: close
    Http {
        /// Address of the HTTP service
        #[arg(long, value_name = "IP:PORT")]
        addr: SocketAddr,
        /// Client threads (one connection each at a time)
        #[arg(long, value_name = "T", default_value_t = 16)]
        threads: usize,
        /// Seconds to run
        #[arg(long, value_name = "S", default_value_t = 5.0)]
        duration: f64,
        /// One request per connection, with `Connection: close`
        #[arg(long)]
        close: bool,
        /// Path to GET
        #[arg(long, value_name = "PATH", default_value = "/")]
        path: String,
    },
    /// Connect + `GET PATH` + read the whole answer + close, one at a time
    /// at a steady rate; p50/p90/p99/max of the whole exchange in ms, and
    /// the failures (a flood benchmark's legitimate client)
    Latency {
        /// Address of the HTTP service
        #[arg(long, value_name = "IP:PORT")]
        addr: SocketAddr,
        /// Exchanges started per second (one at a time: a slow one delays
        /// the next, none is skipped)
        #[arg(long, value_name = "R", default_value_t = 100.0)]
        rate: f64,
        /// Seconds to run
        #[arg(long, value_name = "S", default_value_t = 5.0)]
        duration: f64,
        /// Source address to bind (another address than a flood's)
        #[arg(long, value_name = "IP")]
        src: Option<IpAddr>,
        /// Path to GET
        #[arg(long, value_name = "PATH", default_value = "/")]
        path: String,
    },
    /// Open N idle connections and hold them (for --duration or until killed)
    Hold {
        /// Address to connect to (e.g. the echo service)
        #[arg(long, value_name = "IP:PORT")]
        addr: SocketAddr,
        /// Connections to open
        #[arg(long, value_name = "N")]
        count: usize,
        /// Comma-separated source addresses to bind, used in turn
        #[arg(long, value_name = "IP,IP,...", value_delimiter = ',')]
        src_addrs: Vec<IpAddr>,
        /// Seconds to hold the connections once established
        #[arg(long, value_name = "S", default_value_t = 600.0)]
        duration: f64,
        /// Threads opening the connections
        #[arg(long, value_name = "T", default_value_t = 8)]
        threads: usize,
    },
    /// Wait until a TCP connection to the address succeeds
    Wait {
        /// Address to connect to
        #[arg(long, value_name = "IP:PORT")]
        addr: SocketAddr,
        /// Give up after S seconds
        #[arg(long, value_name = "S", default_value_t = 10.0)]
        timeout: f64,
    },
}

fn main() -> ExitCode {
    tools::sys::default_sigpipe();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcpload: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Turns a user-given number of seconds into a `Duration`, refusing
/// negative, non-finite and absurd values.
fn secs(what: &str, s: f64) -> Result<Duration, String> {
    if !s.is_finite() || s <= 0.0 || s > 1e6 {
        return Err(format!("{what} must be between 0 and 1e6 seconds, not {s}"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn clients(what: &str, n: usize) -> Result<usize, String> {
    if n == 0 || n > MAX_CLIENTS {
        return Err(format!("{what} must be 1..={MAX_CLIENTS}, not {n}"));
    }
    Ok(n)
}

fn run(cli: Cli) -> Result<(), String> {
    raise_nofile().map_err(|e| format!("cannot raise RLIMIT_NOFILE: {e}"))?;
    let io = secs("--io-timeout", cli.io_timeout)?;
    let max = secs("--max-secs", cli.max_secs)?;
    match cli.cmd {
        Cmd::Upload { addr, bytes, conns } => {
            upload(addr, bytes, clients("--conns", conns)?, io, max)
        }
        Cmd::Download { addr, bytes, conns } => {
            download(addr, bytes, clients("--conns", conns)?, io, max)
        }
        Cmd::Rtt {
            addr,
            count,
            warmup,
        } => {
            if count == 0 || count > MAX_RTT_COUNT || warmup > MAX_RTT_COUNT {
                return Err(format!(
                    "--count must be 1..={MAX_RTT_COUNT} and --warmup at most that"
                ));
            }
            rtt(addr, count, warmup, io)
        }
        Cmd::Cps {
            addr,
            conns,
            duration,
        } => cps(
            addr,
            clients("--conns", conns)?,
            secs("--duration", duration)?,
            io,
        ),
        Cmd::Http {
            addr,
            threads,
            duration,
            close,
            path,
        } => {
            check_path(&path)?;
            http(
                addr,
                clients("--threads", threads)?,
                secs("--duration", duration)?,
                close,
                &path,
                io,
            )
        }
        Cmd::Latency {
            addr,
            rate,
            duration,
            src,
            path,
        } => {
            check_path(&path)?;
            if !rate.is_finite() || !(0.1..=100_000.0).contains(&rate) {
                return Err(format!(
                    "--rate must be 0.1..=100000 per second, not {rate}"
                ));
            }
            if let Some(a) = src.filter(|a| a.is_ipv4() != addr.is_ipv4()) {
                return Err(format!("--src {a} is not of the same family as {addr}"));
            }
            latency(addr, rate, secs("--duration", duration)?, src, &path, io)
        }
        Cmd::Hold {
            addr,
            count,
            src_addrs,
            duration,
            threads,
        } => {
            if count == 0 || count > MAX_HOLD {
                return Err(format!("--count must be 1..={MAX_HOLD}, not {count}"));
            }
            if let Some(a) = src_addrs.iter().find(|a| a.is_ipv4() != addr.is_ipv4()) {
                return Err(format!(
                    "source address {a} is not of the same family as {addr}"
                ));
            }
            hold(
                addr,
                count,
                &src_addrs,
                secs("--duration", duration)?,
                clients("--threads", threads)?,
                io,
            )
        }
        Cmd::Wait { addr, timeout } => wait(addr, secs("--timeout", timeout)?),
    }
}

/// Refuses a `--path` that would not make a valid request line.
fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "--path must start with / and hold no spaces, not {path:?}"
        ));
    }
    Ok(())
}

/// Connects with a timeout and sets read and write timeouts.
fn connect(addr: SocketAddr, io: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, io)?;
    s.set_read_timeout(Some(io))?;
    s.set_write_timeout(Some(io))?;
    Ok(s)
}

/// Adds context to an I/O error.
fn ctx<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what()))
}

/// Splits `total` into `n` shares that differ by at most one.
fn shares(total: u64, n: usize) -> Vec<u64> {
    let n64 = n as u64;
    (0..n64)
        .map(|i| total / n64 + u64::from(i < total % n64))
        .collect()
}

fn mbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
}

// ---------------------------------------------------------------- upload

fn upload(
    addr: SocketAddr,
    bytes: u64,
    conns: usize,
    io: Duration,
    max: Duration,
) -> Result<(), String> {
    let streams = (0..conns)
        .map(|_| ctx(connect(addr, io), || format!("connect to {addr}")))
        .collect::<Result<Vec<_>, _>>()?;
    let barrier = Barrier::new(conns + 1);
    let (elapsed, results) = std::thread::scope(|sc| {
        let handles: Vec<_> = streams
            .into_iter()
            .zip(shares(bytes, conns))
            .map(|(s, n)| {
                let barrier = &barrier;
                sc.spawn(move || {
                    barrier.wait();
                    upload_one(s, n, Instant::now() + max)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a client thread panicked".into()))
            })
            .collect();
        (start.elapsed(), results)
    });
    for r in results {
        r?;
    }
    let rate = mbps(bytes, elapsed);
    println!(
        "upload: {bytes} bytes over {conns} connection(s) in {:.3} s: {rate:.1} MB/s",
        elapsed.as_secs_f64()
    );
    println!(
        "RESULT test=upload bytes={bytes} conns={conns} secs={:.6} mbps={rate:.1}",
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// Sends `n` pattern bytes, half-closes, and waits for the server's FIN,
/// so that the time covers every byte being taken in by the service.
fn upload_one(mut s: TcpStream, n: u64, deadline: Instant) -> Result<(), String> {
    let pattern = Pattern::new(IO_BUF);
    let mut sent = 0u64;
    while sent < n {
        if Instant::now() > deadline {
            return Err(format!(
                "upload: --max-secs reached after {sent} of {n} bytes"
            ));
        }
        let len = (n - sent).min(IO_BUF as u64) as usize;
        let chunk = pattern.slice(sent, len);
        ctx(s.write_all(chunk), || {
            format!("upload write at byte {sent}")
        })?;
        sent += len as u64;
    }
    ctx(s.shutdown(Shutdown::Write), || "upload shutdown".into())?;
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("upload: waiting for the server's FIN: {e}")),
        }
    }
}

// ---------------------------------------------------------------- HTTP

/// A parsed response head.
struct Head {
    /// Length of the head in bytes, including the blank line.
    len: usize,
    status: u16,
    content_length: u64,
    close: bool,
}

/// Parses a response head from `buf`; `Ok(None)` if it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad HTTP response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let mut content_length = None;
    // HTTP/1.0 responses close unless they say otherwise (RFC 9112 §9.3).
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or("bad Content-Length in response")?;
            content_length = Some(v);
        } else if h.name.eq_ignore_ascii_case("connection") {
            for tok in h.value.split(|&b| b == b',') {
                let tok = tok.trim_ascii();
                if tok.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked responses are not supported by tcpload".into());
        }
    }
    let content_length = content_length.ok_or("response without Content-Length")?;
    Ok(Some(Head {
        len,
        status,
        content_length,
        close,
    }))
}

/// A connection's receive buffer: bytes `start..end` of `buf` are unread.
struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    fn new() -> RecvBuf {
        RecvBuf {
            buf: vec![0; IO_BUF],
            start: 0,
            end: 0,
        }
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more bytes; `Ok(0)` at end of stream.
    fn fill(&mut self, s: &mut TcpStream) -> io::Result<usize> {
        if self.start == self.end {
            self.clear();
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match s.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads until a complete response head is buffered and consumes it.
    fn read_head(&mut self, s: &mut TcpStream) -> Result<Head, String> {
        loop {
            if let Some(h) = parse_head(self.unread())? {
                self.start += h.len;
                return Ok(h);
            }
            if self.end - self.start >= MAX_HEAD {
                return Err(format!("response head longer than {MAX_HEAD} bytes"));
            }
            match self.fill(s) {
                Ok(0) => return Err("connection closed before a full response head".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading response head: {e}")),
            }
        }
    }

    /// Consumes a body of `n` bytes, handing each piece to `sink`.
    fn read_body(
        &mut self,
        s: &mut TcpStream,
        n: u64,
        mut sink: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut left = n;
        loop {
            let avail = ((self.end - self.start) as u64).min(left) as usize;
            if avail > 0 {
                sink(&self.buf[self.start..self.start + avail])?;
                self.start += avail;
                left -= avail as u64;
            }
            if left == 0 {
                return Ok(());
            }
            match self.fill(s) {
                Ok(0) => {
                    return Err(format!(
                        "connection closed with {left} of {n} body bytes missing"
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(format!("reading body ({left} of {n} bytes left): {e}")),
            }
        }
    }
}

// ---------------------------------------------------------------- download

fn download(
    addr: SocketAddr,
    bytes: u64,
    conns: usize,
    io: Duration,
    max: Duration,
) -> Result<(), String> {
    let streams = (0..conns)
        .map(|_| ctx(connect(addr, io), || format!("connect to {addr}")))
        .collect::<Result<Vec<_>, _>>()?;
    let barrier = Barrier::new(conns + 1);
    let (elapsed, results) = std::thread::scope(|sc| {
        let handles: Vec<_> = streams
            .into_iter()
            .zip(shares(bytes, conns))
            .map(|(s, n)| {
                let barrier = &barrier;
                sc.spawn(move || {
                    barrier.wait();
                    download_one(s, addr, n, Instant::now() + max)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a client thread panicked".into()))
            })
            .collect();
        (start.elapsed(), results)
    });
    for r in results {
        r?;
    }
    let rate = mbps(bytes, elapsed);
    println!(
        "download: {bytes} bytes (verified i % 251) over {conns} connection(s) in {:.3} s: {rate:.1} MB/s",
        elapsed.as_secs_f64()
    );
    println!(
        "RESULT test=download bytes={bytes} conns={conns} secs={:.6} mbps={rate:.1} verified=1",
        elapsed.as_secs_f64()
    );
    Ok(())
}

fn download_one(
    mut s: TcpStream,
    addr: SocketAddr,
    n: u64,
    deadline: Instant,
) -> Result<(), String> {
    let req = format!("GET /bytes/{n} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    ctx(s.write_all(req.as_bytes()), || "sending the request".into())?;
    let mut rb = RecvBuf::new();
    let head = rb.read_head(&mut s)?;
    if head.status != 200 {
        return Err(format!("GET /bytes/{n}: status {}", head.status));
    }
    if head.content_length != n {
        return Err(format!(
            "GET /bytes/{n}: Content-Length {} instead of {n}",
            head.content_length
        ));
    }
    let mut checker = Checker::new(IO_BUF);
    rb.read_body(&mut s, n, |chunk| {
        if Instant::now() > deadline {
            return Err(format!(
                "GET /bytes/{n}: --max-secs reached after {} bytes",
                checker.offset()
            ));
        }
        checker
            .check(chunk)
            .map_err(|m| format!("GET /bytes/{n}: {m}"))
    })
}

// ---------------------------------------------------------------- rtt

fn rtt(addr: SocketAddr, count: u64, warmup: u64, io: Duration) -> Result<(), String> {
    let mut s = ctx(connect(addr, io), || format!("connect to {addr}"))?;
    ctx(s.set_nodelay(true), || "TCP_NODELAY".into())?;
    let mut samples: Vec<u64> = Vec::with_capacity(count as usize);
    let mut b = [0u8; 1];
    for i in 0..warmup + count {
        let t0 = Instant::now();
        ctx(s.write_all(&[(i % 251) as u8]), || {
            format!("round trip {i}: write")
        })?;
        ctx(s.read_exact(&mut b), || format!("round trip {i}: read"))?;
        let dt = t0.elapsed();
        if b[0] != (i % 251) as u8 {
            return Err(format!(
                "round trip {i}: echoed {} instead of {}",
                b[0],
                i % 251
            ));
        }
        if i >= warmup {
            samples.push(dt.as_nanos().min(u64::MAX as u128) as u64);
        }
    }
    samples.sort_unstable();
    let us = |p: f64| percentile(&samples, p).unwrap_or(0) as f64 / 1000.0;
    let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / samples.len() as f64 / 1000.0;
    let (p50, p90, p99, max) = (us(50.0), us(90.0), us(99.0), us(100.0));
    println!(
        "rtt: {count} 1-byte round trips: p50 {p50:.2} µs, p90 {p90:.2} µs, p99 {p99:.2} µs, max {max:.1} µs, mean {mean:.2} µs"
    );
    println!(
        "RESULT test=rtt count={count} p50_us={p50:.2} p90_us={p90:.2} p99_us={p99:.2} max_us={max:.1} mean_us={mean:.2}"
    );
    Ok(())
}

// ---------------------------------------------------------------- cps

/// Counters shared by the client threads of a timed run.
#[derive(Default)]
struct Tally {
    done: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first_error.lock() {
            f.get_or_insert(e);
        }
        // Do not spin on a peer that refuses everything.
        std::thread::sleep(Duration::from_millis(1));
    }

    fn first_error(&self) -> String {
        self.first_error
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default()
    }
}

fn cps(addr: SocketAddr, conns: usize, duration: Duration, io: Duration) -> Result<(), String> {
    let tally = Tally::default();
    let start = Instant::now();
    let deadline = start + duration;
    std::thread::scope(|sc| {
        for t in 0..conns {
            let tally = &tally;
            sc.spawn(move || {
                let mut i = t as u64;
                while Instant::now() < deadline {
                    match cps_one(addr, io, (i % 251) as u8) {
                        Ok(()) => {
                            tally.done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tally.error(e),
                    }
                    i += 1;
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let done = tally.done.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let rate = done as f64 / elapsed.as_secs_f64();
    println!(
        "cps: {done} connections ({errors} errors) from {conns} clients in {:.2} s: {rate:.0} connections/s",
        elapsed.as_secs_f64()
    );
    if errors > 0 {
        println!("cps: first error: {}", tally.first_error());
    }
    println!(
        "RESULT test=cps conns={conns} secs={:.3} connections={done} errors={errors} cps={rate:.0}",
        elapsed.as_secs_f64()
    );
    if done == 0 {
        return Err(format!("no connection succeeded: {}", tally.first_error()));
    }
    Ok(())
}

fn cps_one(addr: SocketAddr, io: Duration, byte: u8) -> Result<(), String> {
    let mut s = ctx(connect(addr, io), || format!("connect to {addr}"))?;
    ctx(s.set_nodelay(true), || "TCP_NODELAY".into())?;
    ctx(s.write_all(&[byte]), || "write".into())?;
    let mut b = [0u8; 1];
    ctx(s.read_exact(&mut b), || "read".into())?;
    if b[0] != byte {
        return Err(format!("echoed {} instead of {byte}", b[0]));
    }
    Ok(())
}

// ---------------------------------------------------------------- http

fn http(
    addr: SocketAddr,
    threads: usize,
    duration: Duration,
    close: bool,
    path: &str,
    io: Duration,
) -> Result<(), String> {
    let conn_hdr = if close { "close" } else { "keep-alive" };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: {conn_hdr}\r\n\r\n");
    let tally = Tally::default();
    let connections = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + duration;
    std::thread::scope(|sc| {
        for _ in 0..threads {
            let (tally, req, connections) = (&tally, req.as_bytes(), &connections);
            sc.spawn(move || {
                let mut rb = RecvBuf::new();
                let mut conn: Option<TcpStream> = None;
                while Instant::now() < deadline {
                    let mut s = match conn.take() {
                        Some(s) => s,
                        None => match connect(addr, io) {
                            Ok(s) => {
                                // Requests fit one segment; do not let Nagle
                                // hold one back behind an unacknowledged one.
                                let _ = s.set_nodelay(true);
                                connections.fetch_add(1, Ordering::Relaxed);
                                rb.clear();
                                s
                            }
                            Err(e) => {
                                tally.error(format!("connect to {addr}: {e}"));
                                continue;
                            }
                        },
                    };
                    match http_one(&mut s, &mut rb, req) {
                        Ok(server_closes) => {
                            tally.done.fetch_add(1, Ordering::Relaxed);
                            if !close && !server_closes {
                                conn = Some(s);
                            }
                        }
                        Err(e) => tally.error(e),
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let done = tally.done.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let conns = connections.load(Ordering::Relaxed);
    let rate = done as f64 / elapsed.as_secs_f64();
    let mode = if close { "close" } else { "keepalive" };
    println!(
        "http ({mode}): {done} requests for {path} ({errors} errors, {conns} connections) from {threads} threads in {:.2} s: {rate:.0} requests/s",
        elapsed.as_secs_f64()
    );
    if errors > 0 {
        println!("http: first error: {}", tally.first_error());
    }
    println!(
        "RESULT test=http mode={mode} threads={threads} secs={:.3} requests={done} errors={errors} connections={conns} rps={rate:.0}",
        elapsed.as_secs_f64()
    );
    if done == 0 {
        return Err(format!("no request succeeded: {}", tally.first_error()));
    }
    Ok(())
}

/// Sends one request and reads its response; returns whether the server
/// said it closes the connection.
fn http_one(s: &mut TcpStream, rb: &mut RecvBuf, req: &[u8]) -> Result<bool, String> {
    ctx(s.write_all(req), || "sending the request".into())?;
    let head = rb.read_head(s)?;
    if head.status != 200 {
        return Err(format!("status {}", head.status));
    }
    rb.read_body(s, head.content_length, |_| Ok(()))?;
    Ok(head.close)
}

// ---------------------------------------------------------------- latency

/// Upper bound on the exchanges of one `latency` run (one sample each).
const MAX_LATENCY_SAMPLES: f64 = 10_000_000.0;

fn latency(
    addr: SocketAddr,
    rate: f64,
    duration: Duration,
    src: Option<IpAddr>,
    path: &str,
    io: Duration,
) -> Result<(), String> {
    if rate * duration.as_secs_f64() > MAX_LATENCY_SAMPLES {
        return Err(format!(
            "--rate times --duration must be at most {MAX_LATENCY_SAMPLES}"
        ));
    }
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut samples: Vec<u64> = Vec::new();
    let mut failures = 0u64;
    let mut first_error: Option<String> = None;
    let mut rb = RecvBuf::new();
    let start = Instant::now();
    let end = start + duration;
    let mut next = start;
    while next < end {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let t0 = Instant::now();
        rb.clear();
        match latency_one(addr, src, req.as_bytes(), &mut rb, io) {
            Ok(()) => samples.push(t0.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64),
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
        }
        // A steady schedule: a slow exchange delays the next one, but the
        // run does not try to catch up with a burst.
        next = (next + interval).max(t0);
    }
    let elapsed = start.elapsed();
    samples.sort_unstable();
    let ms = |p: f64| percentile(&samples, p).unwrap_or(0) as f64 / 1e6;
    let (p50, p90, p99, max) = (ms(50.0), ms(90.0), ms(99.0), ms(100.0));
    let n = samples.len();
    println!(
        "latency: {n} connect+GET {path}+close ({failures} failed) in {:.2} s: p50 {p50:.3} ms, p90 {p90:.3} ms, p99 {p99:.3} ms, max {max:.3} ms",
        elapsed.as_secs_f64()
    );
    if let Some(e) = &first_error {
        println!("latency: first failure: {e}");
    }
    println!(
        "RESULT test=latency secs={:.3} ok={n} failed={failures} p50_ms={p50:.3} p90_ms={p90:.3} p99_ms={p99:.3} max_ms={max:.3}",
        elapsed.as_secs_f64()
    );
    if n == 0 {
        return Err(format!(
            "no exchange succeeded: {}",
            first_error.unwrap_or_default()
        ));
    }
    Ok(())
}

/// One connect + request + whole response + close.
fn latency_one(
    addr: SocketAddr,
    src: Option<IpAddr>,
    req: &[u8],
    rb: &mut RecvBuf,
    io: Duration,
) -> Result<(), String> {
    let mut s = ctx(hold_connect(addr, src, io), || format!("connect to {addr}"))?;
    ctx(s.set_read_timeout(Some(io)), || "SO_RCVTIMEO".into())?;
    ctx(s.set_write_timeout(Some(io)), || "SO_SNDTIMEO".into())?;
    let _ = s.set_nodelay(true);
    ctx(s.write_all(req), || "sending the request".into())?;
    let head = rb.read_head(&mut s)?;
    if head.status != 200 {
        return Err(format!("status {}", head.status));
    }
    rb.read_body(&mut s, head.content_length, |_| Ok(()))
}

// ---------------------------------------------------------------- hold

fn hold(
    addr: SocketAddr,
    count: usize,
    src: &[IpAddr],
    duration: Duration,
    threads: usize,
    io: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let held: Mutex<Vec<TcpStream>> = Mutex::new(Vec::with_capacity(count));
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|sc| {
        for _ in 0..threads.min(count) {
            sc.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= count {
                        break;
                    }
                    let from = if src.is_empty() {
                        None
                    } else {
                        Some(src[i % src.len()])
                    };
                    match hold_connect(addr, from, io) {
                        Ok(s) => mine.push(s),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            if let Ok(mut f) = first_error.lock() {
                                f.get_or_insert(format!(
                                    "connection {i} (from {}): {e}",
                                    from.map_or("any".to_string(), |a| a.to_string())
                                ));
                            }
                            break;
                        }
                    }
                }
                if let Ok(mut h) = held.lock() {
                    h.append(&mut mine);
                }
            });
        }
    });
    let held = held.into_inner().unwrap_or_default();
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(format!(
            "hold: {} of {count} connections established, then: {e}",
            held.len()
        ));
    }
    let took = start.elapsed();
    println!(
        "hold: all {} connections to {addr} established in {:.2} s; holding them for {:.0} s",
        held.len(),
        took.as_secs_f64(),
        duration.as_secs_f64()
    );
    println!(
        "RESULT test=hold count={count} established={} secs={:.3}",
        held.len(),
        took.as_secs_f64()
    );
    // Let a script waiting for the line above see it at once.
    let _ = io::stdout().flush();
    std::thread::sleep(duration);
    println!("hold: done, closing {} connections", held.len());
    Ok(())
}

/// Opens one connection, from `from` if given. The source port is left to
/// `connect` (IP_BIND_ADDRESS_NO_PORT), so each source address offers the
/// whole ephemeral range per destination.
fn hold_connect(addr: SocketAddr, from: Option<IpAddr>, io: Duration) -> io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect_timeout(&addr, io);
    };
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    set_bind_address_no_port(&sock)?;
    sock.bind(&SockAddr::from(SocketAddr::new(from, 0)))?;
    sock.connect_timeout(&SockAddr::from(addr), io)?;
    Ok(sock.into())
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2+): `bind` takes only the
/// address and `connect` picks the port knowing the whole 4-tuple.
fn set_bind_address_no_port(sock: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option value of the given size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------- wait

fn wait(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let last = match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => {
                println!(
                    "wait: {addr} accepts connections (after {:.2} s)",
                    start.elapsed().as_secs_f64()
                );
                println!("RESULT test=wait secs={:.3}", start.elapsed().as_secs_f64());
                return Ok(());
            }
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            return Err(format!(
                "{addr} did not accept a connection within {:.1} s: {last}",
                timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_are_even() {
        let s = shares(10, 3);
        assert_eq!(s, vec![4, 3, 3]);
        assert_eq!(shares(1 << 30, 7).iter().sum::<u64>(), 1 << 30);
        assert_eq!(shares(2, 4), vec![1, 1, 0, 0]);
    }

    #[test]
    fn response_heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.content_length, h.close, h.len),
            (200, 12, false, 39)
        );
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive, CLOSE\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.close);
        let h = parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.close, "HTTP/1.0 closes by default");
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
            .unwrap()
            .is_none());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err(), "no length");
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn bad_durations_are_refused() {
        assert!(secs("x", -1.0).is_err());
        assert!(secs("x", f64::NAN).is_err());
        assert!(secs("x", 0.0).is_err());
        assert_eq!(secs("x", 1.5), Ok(Duration::from_millis(1500)));
    }
}
