//! A small HTTP/1.1 server (RFC 9110, RFC 9112): GET and HEAD, persistent
//! connections, pipelining, built-in pages and static files.
//!
//! Paths:
//! - `/`: an HTML status page (interface, addresses, uptime, counters, open
//!   connections by state) from the [`StatusBoard`];
//! - `/stats`: the same as JSON;
//! - `/metrics`: the same in the Prometheus text format ([`super::metrics`]);
//! - `/bytes/N`: `N` bytes where byte `i` is `i % 251`, generated as send
//!   credit allows (never buffered, `N` up to [`HttpConfig::max_bytes_n`]);
//! - with [`HttpConfig::root`], files under that directory. A file wins over
//!   a built-in page of the same path; `/` serves `index.html` if there is one.
//!
//! Every response carries `Content-Length` and `Server: tcpd/0.1`. There is
//! deliberately no `Date` header: the server behaves as one without a clock
//! (RFC 9110 §6.6.1), so that a replayed capture produces the same bytes.
//! The handler holds no timers; idle connections are ended by the TCP
//! layer's keep-alive and user timeout.

use super::{ConnCtx, Handler, Io, Rendered, Rendering, Service, Status, StatusBoard, OFFER_LIMIT};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `Server` header's value.
pub const SERVER: &str = "tcpd/0.1";

/// Header slots handed to the parser; [`HttpConfig::max_headers`] is capped
/// by it.
const HEADER_SLOTS: usize = 128;

/// Limits and options of the HTTP service. (De)serializes (for the pcap
/// sidecar) with the fields' names, a missing one taking its default;
/// `root` is left out (the sidecar records it as `http_root`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Serve static files from this directory (`--http-root`). Default none.
    #[serde(skip)]
    pub root: Option<PathBuf>,
    /// Largest request head (request line and header fields) in bytes;
    /// larger ones get 431 (RFC 6585 §5) and the connection closes.
    /// Default 8 KiB, at most [`OFFER_LIMIT`].
    pub max_header_bytes: usize,
    /// Most header fields in one request; more get 431. Default 64, at most
    /// 128.
    pub max_headers: usize,
    /// Requests served on one connection; the last one is answered with
    /// `Connection: close` (RFC 9112 §9.6). Default 1000.
    pub max_requests: u32,
    /// Largest request body (`Content-Length`) read and thrown away; larger
    /// ones get 413 (RFC 9110 §15.5.14) and the connection closes.
    /// Default 64 KiB.
    pub max_body_bytes: u64,
    /// Largest `N` for `/bytes/N`; larger ones get 400. Default 2^40.
    pub max_bytes_n: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            root: None,
            max_header_bytes: 8 * 1024,
            max_headers: 64,
            max_requests: 1000,
            max_body_bytes: 64 * 1024,
            max_bytes_n: 1 << 40,
        }
    }
}

/// What every connection of the service shares.
#[derive(Debug)]
struct Shared {
    config: HttpConfig,
    /// The canonical form of `config.root` (symlinks resolved).
    root: Option<PathBuf>,
    board: Arc<StatusBoard>,
}

/// The HTTP service.
#[derive(Clone, Debug)]
pub struct HttpService {
    shared: Arc<Shared>,
}

impl HttpService {
    /// A service with `config`, reading status from `board`. Fails with a
    /// one-line message when a limit is out of range or the root is not a
    /// readable directory.
    pub fn new(config: HttpConfig, board: Arc<StatusBoard>) -> Result<Self, String> {
        if config.max_header_bytes == 0 || config.max_header_bytes > OFFER_LIMIT {
            return Err(format!(
                "http: max_header_bytes must be between 1 and {OFFER_LIMIT}, not {}",
                config.max_header_bytes
            ));
        }
        if config.max_headers == 0 || config.max_headers > HEADER_SLOTS {
            return Err(format!(
                "http: max_headers must be between 1 and {HEADER_SLOTS}, not {}",
                config.max_headers
            ));
        }
        if config.max_requests == 0 {
            return Err("http: max_requests must be at least 1".into());
        }
        let root = match &config.root {
            None => None,
            Some(dir) => {
                let canon = std::fs::canonicalize(dir)
                    .map_err(|e| format!("--http-root {}: {e}", dir.display()))?;
                if !canon.is_dir() {
                    return Err(format!("--http-root {}: not a directory", dir.display()));
                }
                Some(canon)
            }
        };
        Ok(HttpService {
            shared: Arc::new(Shared {
                config,
                root,
                board,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HttpConfig {
        &self.shared.config
    }
}

impl Service for HttpService {
    fn name(&self) -> &'static str {
        "http"
    }
    fn new_handler(&self, ctx: &ConnCtx) -> Box<dyn Handler> {
        Box::new(HttpHandler::new(Arc::clone(&self.shared), *ctx))
    }
}

/// The `/bytes/N` pattern repeated: byte `i` of the table is `i % 251`, and
/// its length is a multiple of 251, so any offset `i % 251` starts a run.
static PATTERN: [u8; 251 * 64] = pattern_table();

const fn pattern_table() -> [u8; 251 * 64] {
    let mut t = [0u8; 251 * 64];
    let mut i = 0;
    while i < t.len() {
        t[i] = (i % 251) as u8;
        i += 1;
    }
    t
}

/// Where the body of the response in progress comes from.
#[derive(Debug)]
enum Body {
    /// No (more) body.
    None,
    /// The handler's `buf`, from `pos`.
    Buf { pos: usize },
    /// The `/bytes` pattern: bytes `next..end`.
    Pattern { next: u64, end: u64 },
    /// A file, with `left` bytes still to send.
    File { file: File, left: u64 },
}

/// Request methods we tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

/// One HTTP connection.
struct HttpHandler {
    shared: Arc<Shared>,
    ctx: ConnCtx,
    /// The response head in progress (reused between responses).
    head: Vec<u8>,
    /// Bytes of `head` already written.
    head_pos: usize,
    /// The body in progress.
    body: Body,
    /// Generated bodies (status page, JSON, error text), reused.
    buf: Vec<u8>,
    /// Requests seen on this connection.
    requests: u32,
    /// Close once the response in progress is written.
    close_after: bool,
    /// We closed our direction; further bytes are thrown away.
    closed: bool,
    /// Request body bytes still to skip.
    skip: u64,
}

impl HttpHandler {
    fn new(shared: Arc<Shared>, ctx: ConnCtx) -> Self {
        HttpHandler {
            shared,
            ctx,
            head: Vec::new(),
            head_pos: 0,
            body: Body::None,
            buf: Vec::new(),
            requests: 0,
            close_after: false,
            closed: false,
            skip: 0,
        }
    }

    fn in_progress(&self) -> bool {
        self.head_pos < self.head.len() || !matches!(self.body, Body::None)
    }

    /// Writes as much of the response in progress as the credit allows.
    /// When it is complete and the connection should close, closes.
    fn pump(&mut self, io: &mut Io<'_>) {
        if self.head_pos < self.head.len() {
            self.head_pos += io.write(&self.head[self.head_pos..]);
            if self.head_pos < self.head.len() {
                return;
            }
        }
        match &mut self.body {
            Body::None => {}
            Body::Buf { pos } => {
                *pos += io.write(&self.buf[*pos..]);
                if *pos >= self.buf.len() {
                    self.body = Body::None;
                }
            }
            Body::Pattern { next, end } => {
                while *next < *end && io.credit() > 0 {
                    let off = (*next % 251) as usize;
                    let run = (PATTERN.len() - off) as u64;
                    let n = run.min(*end - *next) as usize;
                    *next += io.write(&PATTERN[off..off + n]) as u64;
                }
                if *next >= *end {
                    self.body = Body::None;
                }
            }
            Body::File { file, left } => {
                let mut failed = false;
                while *left > 0 && io.credit() > 0 && !failed {
                    let want = usize::try_from(*left).unwrap_or(usize::MAX).min(64 * 1024);
                    let got = io.fill(want, |dst| read_retrying(file, dst));
                    if got == 0 {
                        failed = true;
                    }
                    *left -= got as u64;
                }
                if failed {
                    // The file shrank or could not be read: the promised
                    // Content-Length cannot be met, so the message must not
                    // look complete (RFC 9112 §6.3 rule 7): reset.
                    tracing::warn!(remote = %self.ctx.remote, "static file ended early; resetting");
                    self.body = Body::None;
                    io.abort();
                    return;
                }
                if *left == 0 {
                    self.body = Body::None;
                }
            }
        }
        if !self.in_progress() {
            if self.buf.capacity() > 1024 {
                // The status page's buffer is not kept on an idle connection.
                self.buf = Vec::new();
            }
            if self.close_after && !self.closed {
                self.closed = true;
                io.close();
            }
        }
    }

    /// Starts a response: status line and header fields into `head`.
    fn start(&mut self, code: u16, ctype: &str, len: u64, keep: bool, v10: bool, extra: &str) {
        self.head.clear();
        self.head_pos = 0;
        let _ = write!(
            self.head,
            "HTTP/1.1 {code} {}\r\nServer: {SERVER}\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\n",
            reason(code)
        );
        if !keep {
            self.head.extend_from_slice(b"Connection: close\r\n");
        } else if v10 {
            // RFC 9112 §9.3: an HTTP/1.0 client needs keep-alive confirmed.
            self.head.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        self.head.extend_from_slice(extra.as_bytes());
        self.head.extend_from_slice(b"\r\n");
        if !keep {
            self.close_after = true;
        }
    }

    /// A short text response; `keep` false closes the connection after it.
    fn simple(&mut self, code: u16, keep: bool, v10: bool, head_only: bool, extra: &str) {
        self.buf.clear();
        let _ = writeln!(self.buf, "{code} {}", reason(code));
        let len = self.buf.len() as u64;
        self.start(code, "text/plain; charset=utf-8", len, keep, v10, extra);
        self.body = if head_only {
            Body::None
        } else {
            Body::Buf { pos: 0 }
        };
    }

    /// Parses and answers the request at the start of `data`. Returns how
    /// many bytes it consumed (0: the request head is not complete yet).
    fn request(&mut self, data: &[u8]) -> usize {
        let shared = Arc::clone(&self.shared);
        let cfg = &shared.config;
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        let mut req = httparse::Request::new(&mut slots);
        let hlen = match req.parse(data) {
            Ok(httparse::Status::Partial) => {
                if data.len() > cfg.max_header_bytes {
                    self.simple(431, false, false, false, "");
                    return data.len();
                }
                return 0;
            }
            Ok(httparse::Status::Complete(n)) => n,
            Err(httparse::Error::TooManyHeaders) => {
                self.simple(431, false, false, false, "");
                return data.len();
            }
            Err(httparse::Error::Version) => {
                self.simple(505, false, false, false, "");
                return data.len();
            }
            Err(_) => {
                self.simple(400, false, false, false, "");
                return data.len();
            }
        };
        if hlen > cfg.max_header_bytes || req.headers.len() > cfg.max_headers {
            self.simple(431, false, false, false, "");
            return data.len();
        }
        self.requests = self.requests.saturating_add(1);
        let v10 = req.version == Some(0);
        let method = match req.method {
            Some("GET") => Method::Get,
            Some("HEAD") => Method::Head,
            _ => Method::Other,
        };
        let head_only = method == Method::Head;

        // Header fields that shape the exchange.
        let mut conn_close = false;
        let mut conn_keep = false;
        let mut host = false;
        let mut length: Option<u64> = None;
        let mut bad = false;
        let mut chunked = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") {
                // RFC 9110 §7.6.1: a comma-separated list of options.
                for opt in h.value.split(|b| *b == b',') {
                    let opt = opt.trim_ascii();
                    conn_close |= opt.eq_ignore_ascii_case(b"close");
                    conn_keep |= opt.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if h.name.eq_ignore_ascii_case("host") {
                host = true;
            } else if h.name.eq_ignore_ascii_case("content-length") {
                // RFC 9112 §6.3 rule 5: an invalid or conflicting length is
                // unrecoverable.
                match parse_decimal(h.value.trim_ascii()) {
                    Some(n) if length.is_none() || length == Some(n) => length = Some(n),
                    _ => bad = true,
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            }
        }
        let mut keep = if v10 {
            conn_keep && !conn_close
        } else {
            !conn_close
        };
        if self.requests >= cfg.max_requests {
            keep = false;
        }
        if bad {
            self.simple(400, false, v10, head_only, "");
            return data.len();
        }
        if chunked {
            // RFC 9112 §6.1: a server that does not understand a transfer
            // coding of the request SHOULD answer 501 and close.
            self.simple(501, false, v10, head_only, "");
            return data.len();
        }
        let body_len = length.unwrap_or(0);
        if body_len > cfg.max_body_bytes {
            self.simple(413, false, v10, head_only, "");
            return data.len();
        }
        self.skip = body_len;
        if !v10 && !host {
            // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request)
            // status code to any HTTP/1.1 request message that lacks a Host
            // header field".
            self.simple(400, false, v10, head_only, "");
            return data.len();
        }
        if method == Method::Other {
            // RFC 9110 §15.5.6: 405 carries an Allow header field.
            self.simple(405, keep, v10, false, "Allow: GET, HEAD\r\n");
            return hlen;
        }
        let target = req.path.unwrap_or("");
        self.route(target, keep, v10, head_only);
        hlen
    }

    /// Chooses the response for a GET or HEAD of `target`.
    fn route(&mut self, target: &str, keep: bool, v10: bool, head_only: bool) {
        // origin-form, or absolute-form (RFC 9112 §3.2.2): keep the path.
        let mut path = target;
        if let Some(rest) = path
            .strip_prefix("http://")
            .or_else(|| path.strip_prefix("https://"))
        {
            path = rest.find('/').map_or("/", |i| &rest[i..]);
        }
        let path = path.split(['?', '#']).next().unwrap_or("");
        if !path.starts_with('/') {
            self.simple(400, keep, v10, head_only, "");
            return;
        }
        let shared = Arc::clone(&self.shared);
        if let Some(root) = &shared.root {
            match resolve(root, path) {
                Ok(file) => {
                    self.serve_file(&file, keep, v10, head_only);
                    return;
                }
                Err(Miss::BadRequest) => {
                    self.simple(400, keep, v10, head_only, "");
                    return;
                }
                Err(Miss::NotFound) => {} // Try the built-in pages.
            }
        }
        if path == "/" {
            self.status_page();
            let len = self.buf.len() as u64;
            self.start(
                200,
                "text/html; charset=utf-8",
                len,
                keep,
                v10,
                "Cache-Control: no-store\r\n",
            );
            self.body = if head_only {
                Body::None
            } else {
                Body::Buf { pos: 0 }
            };
        } else if path == "/stats" || path == "/metrics" {
            let ctype = if path == "/stats" {
                self.stats_json();
                "application/json"
            } else {
                self.metrics_text();
                super::metrics::CONTENT_TYPE
            };
            if self.buf.is_empty() {
                self.simple(500, keep, v10, head_only, "");
                return;
            }
            let len = self.buf.len() as u64;
            self.start(200, ctype, len, keep, v10, "Cache-Control: no-store\r\n");
            self.body = if head_only {
                Body::None
            } else {
                Body::Buf { pos: 0 }
            };
        } else if let Some(n) = path.strip_prefix("/bytes/") {
            match parse_decimal(n.as_bytes()) {
                Some(n) if n <= self.shared.config.max_bytes_n => {
                    self.start(200, "application/octet-stream", n, keep, v10, "");
                    self.body = if head_only || n == 0 {
                        Body::None
                    } else {
                        Body::Pattern { next: 0, end: n }
                    };
                }
                _ => self.simple(400, keep, v10, head_only, ""),
            }
        } else {
            self.simple(404, keep, v10, head_only, "");
        }
    }

    fn serve_file(&mut self, path: &Path, keep: bool, v10: bool, head_only: bool) {
        // O_NOFOLLOW: the path was canonical a moment ago; if its last
        // component has since become a symlink, refuse rather than follow.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .and_then(|f| f.metadata().map(|m| (f, m)));
        match opened {
            Ok((file, meta)) if meta.is_file() => {
                let len = meta.len();
                self.start(200, content_type(path), len, keep, v10, "");
                self.body = if head_only || len == 0 {
                    Body::None
                } else {
                    Body::File { file, left: len }
                };
            }
            Ok(_) => self.simple(404, keep, v10, head_only, ""),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                self.simple(403, keep, v10, head_only, "")
            }
            Err(_) => self.simple(404, keep, v10, head_only, ""),
        }
    }

    /// The HTML status page into `buf`.
    fn status_page(&mut self) {
        let up = self.shared.board.uptime();
        let r = self
            .shared
            .board
            .rendered(Rendering::StatusHtml, render_status_html);
        let b = &mut self.buf;
        b.clear();
        let [head, mid, tail] = r.parts.as_slice() else {
            return;
        };
        b.extend_from_slice(head);
        let _ = write!(b, "{}.{:03}", up.as_secs(), up.subsec_millis());
        b.extend_from_slice(mid);
        let _ = write!(b, "{}", self.ctx.remote);
        b.extend_from_slice(tail);
    }

    /// The counters as JSON into `buf` (empty if they could not be
    /// serialized). Serialized per request from the published status,
    /// under the board's lock: it is a few hundred numbers, and the uptime
    /// in it changes with every request.
    fn stats_json(&mut self) {
        let up = self.shared.board.uptime().as_millis() as u64;
        let buf = &mut self.buf;
        buf.clear();
        let ok = self
            .shared
            .board
            .with_status(|st| write_stats_json(st, up, buf).is_ok());
        if ok {
            buf.push(b'\n');
        } else {
            buf.clear();
        }
    }

    /// The counters in the Prometheus text format into `buf`.
    fn metrics_text(&mut self) {
        let up = self.shared.board.uptime();
        let r = self
            .shared
            .board
            .rendered(Rendering::Metrics, super::metrics::render);
        let b = &mut self.buf;
        b.clear();
        let [head, tail] = r.parts.as_slice() else {
            return;
        };
        b.extend_from_slice(head);
        super::metrics::write_uptime(b, up);
        b.extend_from_slice(tail);
    }
}

/// The HTML status page of `st`, in three pieces: the uptime goes between
/// the first two, the client's address between the last two.
fn render_status_html(st: &Status) -> Rendered {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>tcpd</title></head><body>\n<h1>tcpd</h1>\n<p>Interface <b>");
    html_escape(&mut head, &st.iface);
    let _ = write!(head, "</b>, MTU {}, up ", st.mtu);
    let mut mid = Vec::with_capacity(128);
    mid.extend_from_slice(b" s. Addresses:");
    for a in &st.addrs {
        let _ = write!(mid, " {a}");
    }
    mid.extend_from_slice(b". You are ");
    let mut b = Vec::with_capacity(4096);
    b.extend_from_slice(b".</p>\n<h2>Services</h2>\n<table>\n");
    for (name, port) in &st.services {
        let _ = writeln!(b, "<tr><td>{name}</td><td>{port}</td></tr>");
    }
    b.extend_from_slice(b"</table>\n<h2>Open connections</h2>\n<table>\n");
    for (state, n) in &st.states {
        let _ = writeln!(b, "<tr><td>{}</td><td>{n}</td></tr>", state.name());
    }
    b.extend_from_slice(b"</table>\n<h2>TCP/IP counters</h2>\n<table>\n");
    for (name, v) in super::stats_fields(&st.stats) {
        let _ = writeln!(b, "<tr><td>{name}</td><td>{v}</td></tr>");
    }
    b.extend_from_slice(b"</table>\n<h2>Drops</h2>\n<table>\n");
    for (name, v) in st.stats.drops.named() {
        let _ = writeln!(b, "<tr><td>{name}</td><td>{v}</td></tr>");
    }
    b.extend_from_slice(b"</table>\n<h2>Daemon</h2>\n<table>\n");
    for (name, v) in &st.daemon {
        b.extend_from_slice(b"<tr><td>");
        html_escape(&mut b, name);
        let _ = writeln!(b, "</td><td>{v}</td></tr>");
    }
    b.extend_from_slice(b"</table>\n</body></html>\n");
    Rendered {
        parts: vec![head, mid, b],
    }
}

/// A map serialized from the pairs a function yields each time it is
/// called (so that a borrowed [`Status`] needs no copy).
struct MapOf<F>(F);

impl<F, I, K, V> serde::Serialize for MapOf<F>
where
    F: Fn() -> I,
    I: IntoIterator<Item = (K, V)>,
    K: serde::Serialize,
    V: serde::Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map((self.0)())
    }
}

/// The `/stats` document: `{"iface", "mtu", "uptime_ms", "addrs",
/// "services": {name: port}, "connections": {state: n}, "tcp": {counter: n},
/// "drops": {reason: n}, "daemon": {counter: n}}`.
struct StatsDoc<'a> {
    st: &'a Status,
    uptime_ms: u64,
}

impl serde::Serialize for StatsDoc<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let st = self.st;
        let mut m = s.serialize_struct("Stats", 9)?;
        m.serialize_field("iface", &st.iface)?;
        m.serialize_field("mtu", &st.mtu)?;
        m.serialize_field("uptime_ms", &self.uptime_ms)?;
        m.serialize_field("addrs", &st.addrs)?;
        m.serialize_field("services", &MapOf(|| st.services.iter().copied()))?;
        m.serialize_field(
            "connections",
            &MapOf(|| st.states.iter().map(|(s, n)| (s.name(), *n))),
        )?;
        m.serialize_field("tcp", &MapOf(|| super::stats_fields(&st.stats)))?;
        m.serialize_field("drops", &MapOf(|| st.stats.drops.named()))?;
        m.serialize_field("daemon", &MapOf(|| st.daemon.iter().copied()))?;
        m.end()
    }
}

/// Appends the `/stats` JSON document of `st` (without the final newline)
/// to `out`.
pub(crate) fn write_stats_json(
    st: &Status,
    uptime_ms: u64,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    serde_json::to_writer(out, &StatsDoc { st, uptime_ms })
}

impl Handler for HttpHandler {
    fn on_data(&mut self, data: &[u8], io: &mut Io<'_>) -> usize {
        if self.closed {
            // After our FIN nothing more is answered; let the bytes go.
            return data.len();
        }
        let mut used = 0;
        loop {
            if self.skip > 0 {
                let k = self.skip.min((data.len() - used) as u64);
                used += k as usize;
                self.skip -= k;
                if self.skip > 0 {
                    return used;
                }
            }
            // Responses go out in request order (RFC 9112 §9.3.2): finish
            // the one in progress before reading the next request.
            self.pump(io);
            if self.closed || io.wants_abort() {
                return data.len();
            }
            if self.in_progress() || used == data.len() || self.close_after {
                return used;
            }
            let n = self.request(&data[used..]);
            if n == 0 {
                return used;
            }
            used += n;
        }
    }

    fn on_writable(&mut self, io: &mut Io<'_>) {
        if !self.closed {
            self.pump(io);
        }
    }

    fn on_peer_close(&mut self, io: &mut Io<'_>) {
        // No more requests will come: finish the response in progress (if
        // any), then close. An incomplete request is dropped.
        self.close_after = true;
        if !self.closed {
            self.pump(io);
        }
    }
}

/// One `read`, retried on `Interrupted`; 0 at the end of the file or on
/// an error.
fn read_retrying(file: &mut File, dst: &mut [u8]) -> usize {
    loop {
        match file.read(dst) {
            Ok(n) => return n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return 0,
        }
    }
}

/// Why a static path did not resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Miss {
    /// Malformed: bad percent-encoding, NUL, or a `..` segment.
    BadRequest,
    /// No such file under the root (or it lies outside the root).
    NotFound,
}

/// Maps a request path to a file under `root` (canonical). Percent-decodes
/// first (RFC 3986 §2.1), then splits into segments, so an encoded `/` or
/// `.` cannot smuggle a `..` past the check; resolves symlinks and checks the
/// result still lies under the root; a directory maps to its `index.html`.
fn resolve(root: &Path, path: &str) -> Result<PathBuf, Miss> {
    let decoded = percent_decode(path.as_bytes()).ok_or(Miss::BadRequest)?;
    let mut p = root.to_path_buf();
    for seg in decoded.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => return Err(Miss::BadRequest),
            s => p.push(OsStr::from_bytes(s)),
        }
    }
    let mut canon = std::fs::canonicalize(&p).map_err(|_| Miss::NotFound)?;
    if !canon.starts_with(root) {
        tracing::debug!(path, "static path resolves outside the root");
        return Err(Miss::NotFound);
    }
    if canon.is_dir() {
        canon = std::fs::canonicalize(canon.join("index.html")).map_err(|_| Miss::NotFound)?;
        if !canon.starts_with(root) {
            return Err(Miss::NotFound);
        }
    }
    if !canon.is_file() {
        return Err(Miss::NotFound);
    }
    Ok(canon)
}

/// Decodes `%XX` escapes. `None` for a malformed escape or a NUL byte.
fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%' {
            let hi = hex(*s.get(i + 1)?)?;
            let lo = hex(*s.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A decimal number of 1 to 20 digits that fits a `u64`.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The content type for a file, by extension.
fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(OsStr::to_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "log" | "rs" | "toml" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "pcap" => "application/vnd.tcpdump.pcap",
        _ => "application/octet-stream",
    }
}

/// The reason phrase for the codes this server sends (RFC 9110 §15).
fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn html_escape(b: &mut Vec<u8>, s: &str) {
    for c in s.bytes() {
        match c {
            b'<' => b.extend_from_slice(b"&lt;"),
            b'>' => b.extend_from_slice(b"&gt;"),
            b'&' => b.extend_from_slice(b"&amp;"),
            b'"' => b.extend_from_slice(b"&quot;"),
            _ => b.push(c),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::services::testkit::Sim;
    use crate::services::Status;

    fn board() -> Arc<StatusBoard> {
        let mut st = Status {
            iface: "tun<0>".into(),
            mtu: 1500,
            ..Status::default()
        };
        st.addrs.push("10.0.0.2".parse().unwrap());
        st.services.push(("echo", 7));
        st.services.push(("http", 80));
        st.states.push((tcp::State::Established, 3));
        st.stats.passive_opens = 42;
        st.stats.drops.paws = 9;
        st.daemon.push(("tun_reads", 17));
        StatusBoard::frozen(st, std::time::Duration::from_millis(61_250))
    }

    fn service(cfg: HttpConfig) -> HttpService {
        HttpService::new(cfg, board()).unwrap()
    }

    fn default_service() -> HttpService {
        service(HttpConfig::default())
    }

    /// One parsed response.
    #[derive(Debug)]
    struct Resp {
        code: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Splits `bytes` into responses; `head_only[i]` says whether response
    /// `i` answers a HEAD (no body whatever its Content-Length).
    fn parse_all(mut bytes: &[u8], head_only: &[bool]) -> Vec<Resp> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let mut hs = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut hs);
            let n = match r.parse(bytes).unwrap() {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => panic!("partial response head"),
            };
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8(h.value.to_vec()).unwrap(),
                    )
                })
                .collect();
            let code = r.code.unwrap();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .expect("Content-Length always")
                .1
                .parse()
                .unwrap();
            let ho = head_only.get(out.len()).copied().unwrap_or(false);
            let blen = if ho { 0 } else { len };
            assert!(bytes.len() >= n + blen, "truncated body");
            out.push(Resp {
                code,
                headers,
                body: bytes[n..n + blen].to_vec(),
            });
            bytes = &bytes[n + blen..];
        }
        out
    }

    fn exchange(svc: &HttpService, req: &[u8], credit: usize) -> (Sim, Vec<Resp>) {
        let mut s = Sim::new(svc);
        s.send(req);
        s.run(credit, 1_000_000);
        let head_only: Vec<bool> = split_methods(req);
        let r = parse_all(&s.tx, &head_only);
        (s, r)
    }

    /// Which requests in `req` are HEAD (for parsing responses).
    fn split_methods(req: &[u8]) -> Vec<bool> {
        let text = String::from_utf8_lossy(req);
        text.split("\r\n\r\n")
            .filter(|r| r.contains("HTTP/1."))
            .map(|r| r.trim_start().starts_with("HEAD "))
            .collect()
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    const GET_ROOT: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn status_page() {
        let (s, r) = exchange(&default_service(), GET_ROOT, 1 << 20);
        assert_eq!(r.len(), 1);
        let r = &r[0];
        assert_eq!(r.code, 200);
        assert_eq!(r.header("Server"), Some("tcpd/0.1"));
        assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
        assert_eq!(
            r.header("Connection"),
            None,
            "HTTP/1.1 keeps alive by default"
        );
        let body = String::from_utf8(r.body.clone()).unwrap();
        assert!(body.contains("tun&lt;0&gt;"), "interface, escaped: {body}");
        assert!(body.contains("10.0.0.2"));
        assert!(body.contains("up 61.250 s"));
        assert!(body.contains("<td>ESTABLISHED</td><td>3</td>"));
        assert!(body.contains("<td>passive_opens</td><td>42</td>"));
        assert!(body.contains("<td>paws</td><td>9</td>"));
        assert!(body.contains("<td>tun_reads</td><td>17</td>"));
        assert!(body.contains("10.0.0.1:40000"));
        assert!(!s.closed);
    }

    #[test]
    fn status_renderings_follow_each_publication() {
        let board = board();
        let svc = HttpService::new(HttpConfig::default(), board.clone()).unwrap();
        let page = |svc: &HttpService, req: &[u8]| {
            let (_, r) = exchange(svc, req, 1 << 20);
            String::from_utf8(r[0].body.clone()).unwrap()
        };
        let stats = b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(page(&svc, GET_ROOT).contains("<td>passive_opens</td><td>42</td>"));
        assert!(page(&svc, stats).contains("\"passive_opens\":42"));
        // Requests between two publications share one rendering.
        let a = board.rendered(Rendering::StatusHtml, |_| Rendered::default());
        let b = board.rendered(Rendering::StatusHtml, |_| Rendered::default());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!a.parts.is_empty(), "the page rendered above was kept");
        // A publication is visible to the next request, on both pages.
        let mut st = board.snapshot();
        st.stats.passive_opens = 43;
        board.publish(st);
        let html = page(&svc, GET_ROOT);
        assert!(html.contains("<td>passive_opens</td><td>43</td>"), "{html}");
        assert!(html.contains("up 61.250 s"), "{html}");
        assert!(page(&svc, stats).contains("\"passive_opens\":43"));
    }

    #[test]
    fn stats_json() {
        let (_, r) = exchange(
            &default_service(),
            b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n",
            1 << 20,
        );
        assert_eq!(r[0].code, 200);
        assert_eq!(r[0].header("Content-Type"), Some("application/json"));
        let body = String::from_utf8(r[0].body.clone()).unwrap();
        assert!(
            body.starts_with("{\"iface\":\"tun<0>\",\"mtu\":1500,\"uptime_ms\":61250,"),
            "{body}"
        );
        assert!(body.contains("\"addrs\":[\"10.0.0.2\"]"));
        assert!(body.contains("\"services\":{\"echo\":7,\"http\":80}"));
        assert!(body.contains("\"connections\":{\"ESTABLISHED\":3}"));
        assert!(body.contains("\"passive_opens\":42"));
        assert!(body.contains("\"paws\":9"));
        assert!(body.contains("\"daemon\":{\"tun_reads\":17}"));
        // Balanced and well-formed at the top level.
        let opens = body.matches('{').count();
        assert_eq!(opens, body.matches('}').count());
        assert!(body.ends_with("}}\n"));
    }

    #[test]
    fn metrics_text() {
        let req =
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nHEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let (_, r) = exchange(&default_service(), req, 1 << 20);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].code, 200);
        assert_eq!(
            r[0].header("Content-Type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let body = String::from_utf8(r[0].body.clone()).unwrap();
        assert!(body.contains("\ntcpd_uptime_seconds 61.250\n"), "{body}");
        assert!(
            body.contains("\ntcpd_tcp_passive_opens_total 42\n"),
            "{body}"
        );
        assert!(
            body.contains("\ntcpd_tcp_drops_total{reason=\"paws\"} 9\n"),
            "{body}"
        );
        assert!(
            body.contains("\ntcpd_service_port{service=\"http\"} 80\n"),
            "{body}"
        );
        assert_eq!(r[1].header("Content-Length"), r[0].header("Content-Length"));
        assert!(r[1].body.is_empty());
    }

    #[test]
    fn json_strings_are_escaped() {
        let st = Status {
            iface: "a\"b\\c\nd\u{1}é".into(),
            ..Status::default()
        };
        let mut b = Vec::new();
        write_stats_json(&st, 0, &mut b).unwrap();
        let text = String::from_utf8(b).unwrap();
        assert!(
            text.starts_with("{\"iface\":\"a\\\"b\\\\c\\nd\\u0001é\","),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["iface"], "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn bytes_n_exact_with_tiny_credit() {
        for credit in [1, 7, 250, 251, 252, 1460] {
            let (s, r) = exchange(
                &default_service(),
                b"GET /bytes/5000 HTTP/1.1\r\nHost: x\r\n\r\n",
                credit,
            );
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].header("Content-Length"), Some("5000"));
            assert_eq!(
                r[0].header("Content-Type"),
                Some("application/octet-stream")
            );
            assert!(r[0].body == pattern(5000), "credit {credit}");
            assert!(!s.closed);
        }
    }

    #[test]
    fn bytes_zero_and_head() {
        let req = b"GET /bytes/0 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /bytes/1099511627776 HTTP/1.1\r\nHost: x\r\n\r\n";
        let (s, r) = exchange(&default_service(), req, 1 << 16);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].code, 200);
        assert_eq!(r[0].header("Content-Length"), Some("0"));
        assert!(r[0].body.is_empty());
        assert_eq!(r[1].header("Content-Length"), Some("1099511627776"));
        assert!(!s.tx.ends_with(&[0]), "HEAD sends no body");
        let head_len = s.tx.len();
        assert!(head_len < 400, "only two heads were written: {head_len}");
    }

    #[test]
    fn bytes_huge_n_is_generated_not_buffered() {
        // 2^40 bytes: if it were buffered, this test would die. Stream a few
        // MB of it and check the pattern continues across steps.
        let svc = default_service();
        let mut s = Sim::new(&svc);
        s.send(b"GET /bytes/1099511627776 HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut total = 0;
        for _ in 0..64 {
            total += s.step(65536);
        }
        assert_eq!(total, 64 * 65536);
        let head_end = s.tx.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = &s.tx[head_end..];
        assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        assert!(!s.closed);
        assert!(s.driver.blocked(), "waits for more credit");
    }

    #[test]
    fn bytes_bad_n() {
        for path in [
            "/bytes/abc",
            "/bytes/",
            "/bytes/-1",
            "/bytes/1099511627777",
            "/bytes/99999999999999999999999",
        ] {
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            let (s, r) = exchange(&default_service(), req.as_bytes(), 1 << 16);
            assert_eq!(r[0].code, 400, "{path}");
            assert!(!s.closed, "a bad path keeps the connection");
        }
    }

    #[test]
    fn split_at_every_byte_gives_the_same_response() {
        let req: &[u8] = b"GET /bytes/300 HTTP/1.1\r\nHost: example\r\nUser-Agent: t\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\n\r\n";
        let (_, whole) = exchange(&default_service(), req, 1 << 16);
        let svc = default_service();
        let mut reference = None;
        for cut in 1..req.len() {
            let mut s = Sim::new(&svc);
            s.send(&req[..cut]);
            s.run(1 << 16, 1000);
            s.send(&req[cut..]);
            s.run(1 << 16, 1000);
            match &reference {
                None => reference = Some(s.tx.clone()),
                Some(r) => assert!(*r == s.tx, "cut at {cut}"),
            }
        }
        let r = parse_all(reference.as_ref().unwrap(), &[false, true]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].body, pattern(300));
        assert_eq!(r[0].body, whole[0].body);
        assert_eq!(r[1].code, 200);
    }

    #[test]
    fn pipelined_requests_answered_in_order() {
        let req = b"GET /bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n\
GET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
HEAD /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n\
GET /bytes/20 HTTP/1.1\r\nHost: x\r\n\r\n";
        for credit in [0, 1, 13, 100, 100_000] {
            let svc = default_service();
            let mut s = Sim::new(&svc);
            s.send(req);
            if credit == 0 {
                s.run(0, 100);
                assert!(s.tx.is_empty(), "no credit, nothing written");
                s.run(64, 100_000);
            } else {
                s.run(credit, 100_000);
            }
            let r = parse_all(&s.tx, &[false, false, true, false]);
            assert_eq!(r.len(), 4, "credit {credit}");
            assert_eq!(r[0].body, pattern(1000));
            assert_eq!(r[1].code, 404);
            assert_eq!(r[2].header("Content-Length"), Some("10"));
            assert!(r[2].body.is_empty());
            assert_eq!(r[3].body, pattern(20));
            assert_eq!(s.released, req.len());
        }
    }

    #[test]
    fn connection_close_is_honoured() {
        let req = b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n";
        let (s, r) = exchange(&default_service(), req, 1 << 16);
        assert_eq!(r.len(), 1, "nothing after Connection: close");
        assert_eq!(r[0].header("Connection"), Some("close"));
        assert!(s.closed);
    }

    #[test]
    fn connection_close_waits_for_the_body() {
        let (s, r) = exchange(
            &default_service(),
            b"GET /bytes/100000 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n",
            1000,
        );
        assert_eq!(r[0].body, pattern(100_000));
        assert!(s.closed);
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let (s, r) = exchange(
            &default_service(),
            b"GET /bytes/3 HTTP/1.0\r\n\r\n",
            1 << 16,
        );
        assert_eq!(r[0].header("Connection"), Some("close"));
        assert!(s.closed);
        let (s, r) = exchange(
            &default_service(),
            b"GET /bytes/3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /bytes/4 HTTP/1.0\r\n\r\n",
            1 << 16,
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].header("Connection"), Some("keep-alive"));
        assert_eq!(r[1].header("Connection"), Some("close"));
        assert_eq!(r[1].body, pattern(4));
        assert!(s.closed);
    }

    #[test]
    fn http11_without_host_is_400() {
        let (s, r) = exchange(&default_service(), b"GET / HTTP/1.1\r\n\r\n", 1 << 16);
        assert_eq!(r[0].code, 400);
        assert!(s.closed);
    }

    #[test]
    fn request_limit_per_connection() {
        let cfg = HttpConfig {
            max_requests: 2,
            ..HttpConfig::default()
        };
        let one = b"GET /bytes/1 HTTP/1.1\r\nHost: x\r\n\r\n";
        let req = [one.as_slice(), one, one].concat();
        let (s, r) = exchange(&service(cfg), &req, 1 << 16);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].header("Connection"), None);
        assert_eq!(r[1].header("Connection"), Some("close"));
        assert!(s.closed);
    }

    #[test]
    fn header_too_large_is_431() {
        // Incomplete head larger than the limit.
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 9000));
        let (s, r) = exchange(&default_service(), &req, 1 << 16);
        assert_eq!(r[0].code, 431);
        assert!(s.closed);
        // Complete head just over the limit.
        let cfg = HttpConfig {
            max_header_bytes: 100,
            ..HttpConfig::default()
        };
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 80));
        req.extend_from_slice(b"\r\n\r\n");
        let (_, r) = exchange(&service(cfg), &req, 1 << 16);
        assert_eq!(r[0].code, 431);
        // Too many header fields.
        let cfg = HttpConfig {
            max_headers: 4,
            ..HttpConfig::default()
        };
        let req = b"GET / HTTP/1.1\r\nHost: x\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n";
        let (_, r) = exchange(&service(cfg), req, 1 << 16);
        assert_eq!(r[0].code, 431);
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..200 {
            req.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        let (_, r) = exchange(&default_service(), &req, 1 << 16);
        assert_eq!(r[0].code, 431);
    }

    #[test]
    fn partial_head_under_the_limit_waits() {
        let mut s = Sim::new(&default_service());
        s.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
        s.run(1 << 16, 100);
        assert!(s.tx.is_empty());
        assert_eq!(s.released, 0);
        s.send(b"\r\n");
        s.run(1 << 16, 100);
        assert!(s.tx.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn methods_other_than_get_and_head_are_405() {
        let req = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /bytes/2 HTTP/1.1\r\nHost: x\r\n\r\n";
        let (s, r) = exchange(&default_service(), req, 1 << 16);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].code, 405);
        assert_eq!(r[0].header("Allow"), Some("GET, HEAD"));
        assert_eq!(r[1].body, pattern(2), "the body was skipped");
        assert!(!s.closed);
    }

    #[test]
    fn body_too_large_is_413() {
        let req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
        let (s, r) = exchange(&default_service(), req, 1 << 16);
        assert_eq!(r[0].code, 413);
        assert_eq!(r[0].header("Connection"), Some("close"));
        assert!(s.closed);
    }

    #[test]
    fn get_with_small_body_split_across_reads() {
        let mut s = Sim::new(&default_service());
        s.send(b"GET /bytes/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc");
        s.run(1 << 16, 100);
        s.send(b"defGET /bytes/2 HTTP/1.1\r\nHost: x\r\n\r\n");
        s.run(1 << 16, 100);
        let r = parse_all(&s.tx, &[]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].body, pattern(2));
    }

    #[test]
    fn malformed_requests() {
        for req in [
            b"GARBAGE\r\n\r\n".as_slice(),
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET nopath HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let (_, r) = exchange(&default_service(), req, 1 << 16);
            assert_eq!(r[0].code, 400, "{}", String::from_utf8_lossy(req));
        }
        let (s, r) = exchange(
            &default_service(),
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            1 << 16,
        );
        assert_eq!(r[0].code, 505);
        assert!(s.closed);
        let (s, r) = exchange(
            &default_service(),
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            1 << 16,
        );
        assert_eq!(r[0].code, 501);
        assert!(s.closed);
    }

    #[test]
    fn absolute_form_and_query() {
        let (_, r) = exchange(
            &default_service(),
            b"GET http://10.0.0.2/bytes/7?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            1 << 16,
        );
        assert_eq!(r[0].body, pattern(7));
    }

    #[test]
    fn peer_close_mid_request_closes_without_answer() {
        let mut s = Sim::new(&default_service());
        s.send(b"GET / HTTP/1.1\r\nHo");
        s.fin();
        s.run(1 << 16, 100);
        assert!(s.tx.is_empty());
        assert!(s.closed);
    }

    #[test]
    fn peer_close_after_request_finishes_response() {
        let mut s = Sim::new(&default_service());
        s.send(
            b"GET /bytes/50000 HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        s.fin();
        s.run(999, 100_000);
        let r = parse_all(&s.tx, &[]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].body, pattern(50000));
        assert_eq!(r[1].body, pattern(5));
        assert!(s.closed);
    }

    #[test]
    fn config_is_validated() {
        let b = board();
        assert!(HttpService::new(
            HttpConfig {
                max_header_bytes: 0,
                ..HttpConfig::default()
            },
            b.clone()
        )
        .is_err());
        assert!(HttpService::new(
            HttpConfig {
                max_header_bytes: 1 << 20,
                ..HttpConfig::default()
            },
            b.clone()
        )
        .is_err());
        assert!(HttpService::new(
            HttpConfig {
                max_headers: 1000,
                ..HttpConfig::default()
            },
            b.clone()
        )
        .is_err());
        assert!(HttpService::new(
            HttpConfig {
                max_requests: 0,
                ..HttpConfig::default()
            },
            b.clone()
        )
        .is_err());
        let e = HttpService::new(
            HttpConfig {
                root: Some("/nonexistent/tcpd-root".into()),
                ..HttpConfig::default()
            },
            b,
        )
        .unwrap_err();
        assert!(e.starts_with("--http-root /nonexistent/tcpd-root:"), "{e}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"/a%20b%2F%2e").unwrap(), b"/a b/.");
        assert!(percent_decode(b"/a%2").is_none());
        assert!(percent_decode(b"/a%zz").is_none());
        assert!(percent_decode(b"/a%00b").is_none());
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b""), None);
    }

    use crate::testdir::TempDir as TempTree;

    fn static_setup() -> (TempTree, HttpService) {
        let t = TempTree::new("http-static");
        let root = t.0.join("www");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("noindex")).unwrap();
        std::fs::write(root.join("index.html"), "<p>home</p>").unwrap();
        std::fs::write(root.join("a b.txt"), "spaced").unwrap();
        std::fs::write(root.join("sub/data.json"), "{}").unwrap();
        std::fs::write(root.join("sub/index.html"), "subindex").unwrap();
        std::fs::write(root.join("big.bin"), pattern(200_000)).unwrap();
        std::fs::write(t.0.join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(t.0.join("secret.txt"), root.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink(&t.0, root.join("up")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/data.json"), root.join("inside.json")).unwrap();
        let svc = service(HttpConfig {
            root: Some(root),
            ..HttpConfig::default()
        });
        (t, svc)
    }

    fn get(svc: &HttpService, path: &str) -> Resp {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (_, mut r) = exchange(svc, req.as_bytes(), 1 << 20);
        assert_eq!(r.len(), 1);
        r.remove(0)
    }

    #[test]
    fn static_files() {
        let (_t, svc) = static_setup();
        let r = get(&svc, "/");
        assert_eq!(
            (r.code, r.body.as_slice()),
            (200, b"<p>home</p>".as_slice())
        );
        assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
        let r = get(&svc, "/a%20b.txt");
        assert_eq!((r.code, r.body.as_slice()), (200, b"spaced".as_slice()));
        assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
        let r = get(&svc, "/sub/data.json?q=1");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(get(&svc, "/sub/").body, b"subindex");
        assert_eq!(get(&svc, "/sub").body, b"subindex");
        assert_eq!(
            get(&svc, "/inside.json").code,
            200,
            "symlink inside the root"
        );
        assert_eq!(get(&svc, "/missing").code, 404);
        assert_eq!(get(&svc, "/noindex/").code, 404, "no directory listings");
        // Built-in pages remain where no file shadows them.
        assert_eq!(get(&svc, "/bytes/3").body, pattern(3));
        assert_eq!(get(&svc, "/stats").code, 200);
    }

    #[test]
    fn static_paths_cannot_escape_the_root() {
        let (_t, svc) = static_setup();
        for p in [
            "/../secret.txt",
            "/sub/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E%2Fsecret.txt",
            "/sub%2F..%2F..%2Fsecret.txt",
            "/a%00b",
        ] {
            let r = get(&svc, p);
            assert_eq!(r.code, 400, "{p}");
            assert!(!r.body.windows(6).any(|w| w == b"secret"));
        }
        for p in ["/leak.txt", "/up/secret.txt"] {
            let r = get(&svc, p);
            assert_eq!(
                r.code, 404,
                "{p}: symlinks out of the root are not followed"
            );
        }
        // What matters is where the path ends up: back inside the root is fine.
        assert_eq!(get(&svc, "/up/www/index.html").body, b"<p>home</p>");
    }

    #[test]
    fn static_file_streams_with_small_credit_and_head() {
        let (_t, svc) = static_setup();
        let (_, r) = exchange(
            &svc,
            b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\nHEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n",
            777,
        );
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].header("Content-Type"),
            Some("application/octet-stream")
        );
        assert!(r[0].body == pattern(200_000));
        assert_eq!(r[1].header("Content-Length"), Some("200000"));
        assert!(r[1].body.is_empty());
    }

    #[test]
    fn random_input_never_panics_and_answers_well_formed() {
        // Fragments of valid and invalid requests glued at random, cut at
        // random, served with random credit: every byte out must parse as a
        // sequence of complete responses with a known status code.
        use crate::services::testkit::Rng;
        let parts: [&[u8]; 12] = [
            b"GET /bytes/17 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /stats HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /bytes/x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\n",
            b"G",
            b"\x00\xff garbage",
            b"GET / HTTP/1.1\r\n",
            b"Host: b\r\n\r\n",
            b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ];
        let svc = default_service();
        for seed in 1..300u64 {
            let mut r = Rng(seed * 0x9e37_79b9);
            let mut input = Vec::new();
            for _ in 0..r.below(8) + 1 {
                input.extend_from_slice(parts[r.below(parts.len() as u64) as usize]);
            }
            let mut s = Sim::new(&svc);
            let mut fed = 0;
            while fed < input.len() {
                let n = (r.below(40) as usize + 1).min(input.len() - fed);
                s.send(&input[fed..fed + n]);
                fed += n;
                s.step(r.below(300) as usize);
            }
            if r.below(2) == 0 {
                s.fin();
            }
            s.run(1 << 16, 10_000);
            // Heads must parse; bodies must match their Content-Length
            // unless the request was a HEAD (then no body follows).
            let mut rest: &[u8] = &s.tx;
            while !rest.is_empty() {
                let mut hs = [httparse::EMPTY_HEADER; 32];
                let mut resp = httparse::Response::new(&mut hs);
                let n = match resp.parse(rest) {
                    Ok(httparse::Status::Complete(n)) => n,
                    other => panic!("seed {seed}: bad response head {other:?}"),
                };
                let code = resp.code.unwrap();
                assert!([200, 400, 404, 405, 413, 431, 501, 505].contains(&code));
                let len: usize = resp
                    .headers
                    .iter()
                    .find(|h| h.name == "Content-Length")
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .unwrap();
                rest = &rest[n..];
                // A HEAD answer has no body: the next bytes (if any) start
                // a response. No body served here starts with a status line.
                let head_answer = len > 0 && (rest.is_empty() || rest.starts_with(b"HTTP/1.1 "));
                if !head_answer {
                    assert!(rest.len() >= len, "seed {seed}: short body");
                    rest = &rest[len..];
                }
            }
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("a.CSS")), "text/css; charset=utf-8");
        assert_eq!(content_type(Path::new("a.png")), "image/png");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}
