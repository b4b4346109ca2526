//! tcpd-refserver: tcpd's services (echo, discard, HTTP) on the kernel's
//! TCP, as the reference the benchmark (`tools/bench.sh`) compares tcpd to.
//!
//! Each worker thread runs its own mio loop with its own listening sockets
//! (`SO_REUSEPORT`, so the kernel spreads connections over the workers by
//! their 4-tuple); a connection stays on the worker that accepted it.
//! Services:
//! - echo (RFC 862): echoes; after the peer's FIN, sends what remains, then
//!   closes.
//! - discard (RFC 863): reads to end of stream, then closes.
//! - HTTP/1.1 (RFC 9112): GET and HEAD of `/` (a small HTML page) and
//!   `/bytes/N` (N bytes, byte i = i % 251, streamed as the socket takes
//!   them); keep-alive unless the request says `Connection: close` (or is
//!   HTTP/1.0 without keep-alive); pipelined requests are answered in order.
//!
//! Memory per connection is bounded: a request head is at most
//! [`MAX_HEAD`] bytes, echo holds at most one read's worth of unsent data,
//! and reading stops while a response is being written.

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::process::ExitCode;
use tools::pattern::Pattern;
use tools::sys::raise_nofile;

/// Largest request head (request line and header fields) accepted; larger
/// ones get 431 (RFC 6585 §5) and the connection closes.
const MAX_HEAD: usize = 8 * 1024;
/// Size of each worker's read buffer, and the largest write of a body.
const CHUNK: usize = 64 * 1024;
/// Most header fields parsed in one request.
const MAX_HEADERS: usize = 64;

/// Echo, discard and HTTP on the kernel's TCP: the reference for tcpd's benchmark.
#[derive(Parser, Debug)]
#[command(name = "tcpd-refserver", version, about)]
struct Cli {
    /// Address to listen on
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    addr: IpAddr,
    /// Echo service port (RFC 862); 0 disables
    #[arg(long, value_name = "PORT", default_value_t = 7)]
    echo: u16,
    /// Discard service port (RFC 863); 0 disables
    #[arg(long, value_name = "PORT", default_value_t = 9)]
    discard: u16,
    /// HTTP/1.1 service port; 0 disables
    #[arg(long, value_name = "PORT", default_value_t = 80)]
    http: u16,
    /// Worker threads [default: one per core]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Listen backlog of each listening socket
    #[arg(long, value_name = "N", default_value_t = 4096)]
    backlog: i32,
    /// Most open connections per worker; more are closed at once
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    max_conns: usize,
    /// Largest N served by /bytes/N
    #[arg(long, value_name = "N", default_value_t = 1 << 40)]
    max_bytes_n: u64,
    /// Size of the page at / in bytes (padded); the default is about the
    /// size of tcpd's status page, so that GET / moves the same bytes
    #[arg(long, value_name = "N", default_value_t = 3400)]
    index_bytes: usize,
}

/// Which service a listener or connection belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Echo,
    Discard,
    Http,
}

fn main() -> ExitCode {
    tools::sys::default_sigpipe();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcpd-refserver: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let nofile = raise_nofile().map_err(|e| format!("cannot raise RLIMIT_NOFILE: {e}"))?;
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || threads > 256 {
        return Err(format!("--threads must be 1..=256, not {threads}"));
    }
    if cli.backlog < 1 {
        return Err(format!("--backlog must be positive, not {}", cli.backlog));
    }
    let services: Vec<(Service, u16)> = [
        (Service::Echo, cli.echo),
        (Service::Discard, cli.discard),
        (Service::Http, cli.http),
    ]
    .into_iter()
    .filter(|&(_, p)| p != 0)
    .collect();
    if services.is_empty() {
        return Err("every service is disabled".into());
    }
    // Bind every worker's listeners before starting any, so that a port in
    // use is reported at once.
    let mut per_worker = Vec::with_capacity(threads);
    for _ in 0..threads {
        let mut ls = Vec::with_capacity(services.len());
        for &(svc, port) in &services {
            let addr = SocketAddr::new(cli.addr, port);
            let l =
                listen(addr, cli.backlog).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            ls.push((l, svc));
        }
        per_worker.push(ls);
    }
    let list: Vec<String> = services
        .iter()
        .map(|(s, p)| format!("{s:?} on {}:{p}", cli.addr).to_lowercase())
        .collect();
    println!(
        "tcpd-refserver: {} with {threads} worker(s), backlog {}, {nofile} files",
        list.join(", "),
        cli.backlog
    );
    let _ = io::stdout().flush();
    let cfg = WorkerConfig {
        max_conns: cli.max_conns,
        max_bytes_n: cli.max_bytes_n,
        index: index_page(cli.index_bytes)?,
    };
    let results: Vec<Result<(), String>> = std::thread::scope(|sc| {
        let handles: Vec<_> = per_worker
            .into_iter()
            .enumerate()
            .map(|(i, ls)| {
                std::thread::Builder::new()
                    .name(format!("refserver-{i}"))
                    .spawn_scoped(sc, move || Worker::new(ls, cfg)?.run())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err("a worker thread panicked".into())),
                Err(e) => Err(format!("cannot start a worker thread: {e}")),
            })
            .collect()
    });
    results.into_iter().collect()
}

/// A non-blocking listening socket with `SO_REUSEPORT` and the given backlog.
fn listen(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SockAddr::from(addr))?;
    s.listen(backlog)?;
    Ok(TcpListener::from_std(s.into()))
}

/// Limits handed to every worker.
#[derive(Clone, Copy, Debug)]
struct WorkerConfig {
    /// The page served at `/` (built once at start, lives as long as the
    /// process).
    index: &'static [u8],
    max_conns: usize,
    max_bytes_n: u64,
}

/// One event loop: its listeners and the connections they accepted.
struct Worker {
    poll: Poll,
    listeners: Vec<(TcpListener, Service)>,
    /// Connection `i` has token `listeners.len() + i`.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    open: usize,
    cfg: WorkerConfig,
    /// Reused read buffer.
    scratch: Vec<u8>,
    pattern: Pattern,
}

impl Worker {
    fn new(listeners: Vec<(TcpListener, Service)>, cfg: WorkerConfig) -> Result<Worker, String> {
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        let mut w = Worker {
            poll,
            listeners,
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            cfg,
            scratch: vec![0; CHUNK],
            pattern: Pattern::new(CHUNK),
        };
        for (i, (l, _)) in w.listeners.iter_mut().enumerate() {
            w.poll
                .registry()
                .register(l, Token(i), Interest::READABLE)
                .map_err(|e| format!("epoll register: {e}"))?;
        }
        Ok(w)
    }

    fn run(mut self) -> Result<(), String> {
        let mut events = Events::with_capacity(1024);
        loop {
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("epoll wait: {e}")),
            }
            for ev in events.iter() {
                let t = ev.token().0;
                if t < self.listeners.len() {
                    self.accept(t);
                } else {
                    // After FIN or an error, read to the end; otherwise a
                    // short read means the socket is drained (see
                    // `Conn::drive`).
                    let full = ev.is_read_closed() || ev.is_error();
                    self.drive(t - self.listeners.len(), full);
                }
            }
        }
    }

    /// Accepts until the listener has no more (mio is edge-triggered).
    fn accept(&mut self, li: usize) {
        loop {
            let (stream, svc) = {
                let (l, svc) = &self.listeners[li];
                match l.accept() {
                    Ok((s, _)) => (s, *svc),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // ECONNABORTED and friends concern one connection;
                    // EMFILE leaves it in the queue: back off until the
                    // next event rather than spin.
                    Err(e) => {
                        if e.raw_os_error() == Some(libc::EMFILE)
                            || e.raw_os_error() == Some(libc::ENFILE)
                        {
                            eprintln!("tcpd-refserver: accept: {e}");
                            return;
                        }
                        continue;
                    }
                }
            };
            if self.open >= self.cfg.max_conns {
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let idx = match self.free.pop() {
                Some(i) => i,
                None => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
            };
            let mut conn = Conn::new(stream, svc);
            let token = Token(self.listeners.len() + idx);
            if self
                .poll
                .registry()
                .register(
                    &mut conn.sock,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.free.push(idx);
                continue;
            }
            self.conns[idx] = Some(conn);
            self.open += 1;
            // Data may already be waiting.
            self.drive(idx, true);
        }
    }

    /// Moves a connection forward as far as it goes; closes it when done.
    /// `full`: keep reading until `WouldBlock` even after a short read.
    fn drive(&mut self, idx: usize, full: bool) {
        let Some(Some(conn)) = self.conns.get_mut(idx) else {
            return;
        };
        let keep = conn
            .drive(&mut self.scratch, &self.pattern, &self.cfg, full)
            .unwrap_or(false);
        if !keep {
            if let Some(mut c) = self.conns[idx].take() {
                let _ = self.poll.registry().deregister(&mut c.sock);
            }
            self.free.push(idx);
            self.open -= 1;
        }
    }
}

/// What a connection is doing.
enum State {
    Echo {
        /// Bytes read but not yet written back (at most one read's worth).
        pending: Vec<u8>,
        sent: usize,
        peer_closed: bool,
    },
    Discard,
    Http(Box<Http>),
}

/// An HTTP connection's state.
#[derive(Default)]
struct Http {
    /// Received bytes not yet parsed (at most `MAX_HEAD`).
    req: Vec<u8>,
    /// Response head (and small body) to write, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// `/bytes/N` body still to stream, and the offset of its next byte.
    body_left: u64,
    body_off: u64,
    /// Close once the current response is written.
    close_after: bool,
    peer_closed: bool,
}

struct Conn {
    sock: TcpStream,
    state: State,
}

/// What a non-blocking write or read did.
enum Step {
    Done(usize),
    Blocked,
}

fn write_step(s: &mut TcpStream, buf: &[u8]) -> io::Result<Step> {
    loop {
        match s.write(buf) {
            Ok(n) => return Ok(Step::Done(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Blocked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn read_step(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<Step> {
    loop {
        match s.read(buf) {
            Ok(n) => return Ok(Step::Done(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Blocked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The page served at `/`.
const INDEX: &str = "<!DOCTYPE html>\n<html><head><title>tcpd-refserver</title></head>\n\
<body><h1>tcpd-refserver</h1>\n<p>The kernel's TCP serving tcpd's services, as the \
reference of tcpd's benchmark.</p>\n<ul><li>echo (RFC 862)</li><li>discard (RFC 863)</li>\
<li>HTTP/1.1: <code>/</code>, <code>/bytes/N</code> (byte i = i % 251)</li></ul>\n\
</body></html>\n";

/// The page at `/`: [`INDEX`] padded with an HTML comment to `size`
/// bytes (or [`INDEX`] alone if `size` is smaller).
fn index_page(size: usize) -> Result<&'static [u8], String> {
    const MAX: usize = 1 << 20;
    if size > MAX {
        return Err(format!("--index-bytes must be at most {MAX}, not {size}"));
    }
    let mut page = INDEX.as_bytes().to_vec();
    let frame = "<!--\n-->\n".len();
    if size >= page.len() + frame {
        let fill = size - page.len() - frame;
        page.extend_from_slice(b"<!--\n");
        page.extend((0..fill).map(|i| if i % 64 == 63 { b'\n' } else { b'.' }));
        page.extend_from_slice(b"-->\n");
    }
    Ok(Box::leak(page.into_boxed_slice()))
}

impl Conn {
    fn new(sock: TcpStream, svc: Service) -> Conn {
        let state = match svc {
            Service::Echo => State::Echo {
                pending: Vec::new(),
                sent: 0,
                peer_closed: false,
            },
            Service::Discard => State::Discard,
            Service::Http => State::Http(Box::default()),
        };
        Conn { sock, state }
    }

    /// Reads and writes until the socket would block; `Ok(false)` when the
    /// connection is finished and should be closed.
    ///
    /// Unless `full`, a read that returns less than the buffer counts as
    /// having drained the socket: every later arrival raises a new
    /// edge-triggered event, so the extra `read` that would only return
    /// `EAGAIN` is saved (one syscall per request). A FIN that arrived
    /// with the data raises no new edge, so events carrying RDHUP or an
    /// error come with `full` set.
    fn drive(
        &mut self,
        scratch: &mut [u8],
        pattern: &Pattern,
        cfg: &WorkerConfig,
        full: bool,
    ) -> io::Result<bool> {
        let sock = &mut self.sock;
        let cap = scratch.len();
        let mut drained = false;
        match &mut self.state {
            State::Discard => loop {
                match read_step(sock, scratch)? {
                    Step::Done(0) => return Ok(false),
                    Step::Done(n) if n < cap && !full => return Ok(true),
                    Step::Done(_) => {}
                    Step::Blocked => return Ok(true),
                }
            },
            State::Echo {
                pending,
                sent,
                peer_closed,
            } => loop {
                while *sent < pending.len() {
                    match write_step(sock, &pending[*sent..])? {
                        Step::Done(n) => *sent += n,
                        Step::Blocked => return Ok(true),
                    }
                }
                pending.clear();
                *sent = 0;
                if *peer_closed {
                    // Everything echoed: close (FIN after the queued data).
                    return Ok(false);
                }
                if drained {
                    return Ok(true);
                }
                match read_step(sock, scratch)? {
                    Step::Done(0) => *peer_closed = true,
                    Step::Done(n) => {
                        drained = n < cap && !full;
                        match write_step(sock, &scratch[..n])? {
                            Step::Done(m) if m == n => {}
                            Step::Done(m) => pending.extend_from_slice(&scratch[m..n]),
                            Step::Blocked => pending.extend_from_slice(&scratch[..n]),
                        }
                    }
                    Step::Blocked => return Ok(true),
                }
            },
            State::Http(h) => loop {
                while h.out_pos < h.out.len() {
                    match write_step(sock, &h.out[h.out_pos..])? {
                        Step::Done(n) => h.out_pos += n,
                        Step::Blocked => return Ok(true),
                    }
                }
                h.out.clear();
                h.out_pos = 0;
                while h.body_left > 0 {
                    let len = h.body_left.min(CHUNK as u64) as usize;
                    match write_step(sock, pattern.slice(h.body_off, len))? {
                        Step::Done(n) => {
                            h.body_off += n as u64;
                            h.body_left -= n as u64;
                        }
                        Step::Blocked => return Ok(true),
                    }
                }
                if h.close_after {
                    // The response is queued; close sends FIN after it.
                    let _ = sock.shutdown(Shutdown::Write);
                    return Ok(false);
                }
                if h.respond(cfg)? {
                    continue;
                }
                if h.peer_closed {
                    return Ok(false);
                }
                if drained {
                    return Ok(true);
                }
                match read_step(sock, scratch)? {
                    Step::Done(0) => h.peer_closed = true,
                    Step::Done(n) => {
                        drained = n < cap && !full;
                        if h.req.len() + n > MAX_HEAD {
                            h.error(431, "Request Header Fields Too Large");
                        } else {
                            h.req.extend_from_slice(&scratch[..n]);
                        }
                    }
                    Step::Blocked => return Ok(true),
                }
            },
        }
    }
}

impl Http {
    /// Queues an error response and closes after it.
    fn error(&mut self, code: u16, reason: &str) {
        self.req.clear();
        self.body_left = 0;
        self.close_after = true;
        let _ = write!(
            self.out,
            "HTTP/1.1 {code} {reason}\r\nServer: tcpd-refserver\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    /// Parses one buffered request and queues its response; `Ok(false)`
    /// when no complete request is buffered.
    fn respond(&mut self, cfg: &WorkerConfig) -> io::Result<bool> {
        if self.req.is_empty() {
            return Ok(false);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Request::new(&mut headers);
        let used = match r.parse(&self.req) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(httparse::Error::TooManyHeaders) => {
                self.error(431, "Request Header Fields Too Large");
                return Ok(true);
            }
            Err(_) => {
                self.error(400, "Bad Request");
                return Ok(true);
            }
        };
        // RFC 9112 §9.3: 1.1 persists unless "close"; 1.0 only with
        // "keep-alive".
        let mut close = r.version != Some(1);
        let mut has_body = false;
        for hd in r.headers.iter() {
            if hd.name.eq_ignore_ascii_case("connection") {
                for tok in hd.value.split(|&b| b == b',') {
                    let tok = tok.trim_ascii();
                    if tok.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if tok.eq_ignore_ascii_case(b"keep-alive") && r.version == Some(0) {
                        close = false;
                    }
                }
            } else if (hd.name.eq_ignore_ascii_case("content-length")
                && hd.value.trim_ascii() != b"0")
                || hd.name.eq_ignore_ascii_case("transfer-encoding")
            {
                has_body = true;
            }
        }
        let method = r.method.unwrap_or("");
        let head_only = method == "HEAD";
        if method != "GET" && !head_only {
            self.error(405, "Method Not Allowed");
            return Ok(true);
        }
        if has_body {
            // A GET with a body is legal but useless here; refuse it rather
            // than frame it.
            self.error(400, "Bad Request");
            return Ok(true);
        }
        let path = r.path.unwrap_or("");
        enum Body {
            Page,
            Bytes(u64),
        }
        let body = if path == "/" {
            Body::Page
        } else if let Some(n) = path.strip_prefix("/bytes/") {
            match n.parse::<u64>() {
                Ok(n) if n <= cfg.max_bytes_n => Body::Bytes(n),
                _ => {
                    self.error(400, "Bad Request");
                    return Ok(true);
                }
            }
        } else {
            self.error(404, "Not Found");
            return Ok(true);
        };
        self.req.drain(..used);
        let conn = if close { "close" } else { "keep-alive" };
        let (ctype, len) = match body {
            Body::Page => ("text/html; charset=utf-8", cfg.index.len() as u64),
            Body::Bytes(n) => ("application/octet-stream", n),
        };
        write!(
            self.out,
            "HTTP/1.1 200 OK\r\nServer: tcpd-refserver\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\nConnection: {conn}\r\n\r\n"
        )?;
        if !head_only {
            match body {
                Body::Page => self.out.extend_from_slice(cfg.index),
                Body::Bytes(n) => {
                    self.body_left = n;
                    self.body_off = 0;
                }
            }
        }
        self.close_after = close;
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn index_page_is_padded_to_size() {
        let p = index_page(3400).unwrap();
        assert_eq!(p.len(), 3400);
        assert!(p.starts_with(INDEX.as_bytes()));
        assert!(p.ends_with(b"-->\n"));
        assert_eq!(index_page(10).unwrap(), INDEX.as_bytes(), "never cut");
        assert!(index_page(2 << 20).is_err());
    }
}
