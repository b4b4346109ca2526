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
//! - `/discard`: `POST` or `PUT` a body of any size (read and thrown away,
//!   never stored); the answer says how many bytes came;
//! - with [`HttpConfig::root`], files under that directory. A file wins over
//!   a built-in page of the same path; `/` serves `index.html` if there is one.
//!   Files carry an `ETag` (RFC 9110 §8.8.3), answer `If-None-Match` with 304
//!   (§13.1.2) and a single `Range` with 206 or 416 (§14).
//!
//! Built-in paths are matched after percent-decoding (RFC 3986 §2.1).
//! Request bodies are framed by `Content-Length` or `Transfer-Encoding:
//! chunked` (RFC 9112 §6, §7.1) and read (skipped) up to a limit, so a
//! request refused with its body still leaves the connection usable for
//! the next one. `Expect: 100-continue` (RFC 9110 §10.1.1) gets `100
//! Continue` when the body will be read, else the final status at once and
//! the connection closes instead of waiting for a body it would not read.
//!
//! Every response carries `Content-Length` (but 304), `Server: tcpd/0.1` and,
//! with [`HttpConfig::date`], `Date` (RFC 9110 §6.6.1) from the host's
//! clock ([`StatusBoard::unix_us`], which a replay sets from the capture).
//!
//! Timers ([`super::Timer`]): a request head must be complete within
//! [`HttpConfig::header_timeout`] of its first byte (of the accept, for the
//! first request); a keep-alive connection may stay idle for
//! [`HttpConfig::idle_timeout`]; a response that makes no progress for
//! [`HttpConfig::send_timeout`] (the client stopped reading) is reset, and so
//! is a connection that does not close within it after our FIN.

use super::{
    ConnCtx, Handler, Io, Rendered, Rendering, Service, ServiceCounter, Status, StatusBoard, Timer,
    OFFER_LIMIT,
};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The `Server` header's value.
pub const SERVER: &str = "tcpd/0.1";

/// Header slots handed to the parser; [`HttpConfig::max_headers`] is capped
/// by it.
const HEADER_SLOTS: usize = 128;

/// Longest chunk-size line (with extensions) or trailer line of a chunked
/// body; longer ones get 400.
const MAX_CHUNK_LINE: usize = 4096;

/// Limits and options of the HTTP service. (De)serializes (for the pcap
/// sidecar) with the fields' names, a missing one taking its default;
/// `root` is left out (the sidecar records it as `http_root`). The
/// timeouts are whole µs under `<name>_us` (null: none); they and `date`
/// came later, and a sidecar without them ran with none of them, so a
/// missing one reads as off.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Serve static files from this directory (`--http-root`). Default none.
    #[serde(skip)]
    pub root: Option<PathBuf>,
    /// Largest request head (request line and header fields) in bytes;
    /// larger ones get 431 (RFC 6585 §5), or 414 (RFC 9110 §15.5.15) when
    /// the request line alone is that long, and the connection closes.
    /// Default 8 KiB, at most [`OFFER_LIMIT`].
    pub max_header_bytes: usize,
    /// Most header fields in one request; more get 431. Default 64, at most
    /// 128.
    pub max_headers: usize,
    /// Requests served on one connection (`--http-max-requests`); the last
    /// one is answered with `Connection: close` (RFC 9112 §9.6). Default 1000.
    pub max_requests: u32,
    /// Largest request body (by `Content-Length`, or the decoded size of a
    /// chunked one) read and thrown away; larger ones get 413 (RFC 9110
    /// §15.5.14) and the connection closes. `/discard` has no limit.
    /// Default 64 KiB.
    pub max_body_bytes: u64,
    /// Largest `N` for `/bytes/N`; larger ones get 400. Default 2^40.
    pub max_bytes_n: u64,
    /// A request head must be complete this long after its first byte (the
    /// first request: after the accept); else 408 and close, or a silent
    /// close when nothing came (`--http-header-timeout`). Also the longest
    /// pause within a request body. `None`: no limit. Default 30 s.
    #[serde(rename = "header_timeout_us", default, with = "opt_us")]
    pub header_timeout: Option<Duration>,
    /// A keep-alive connection idle this long between requests is closed
    /// (`--http-idle-timeout`). `None`: no limit. Default 75 s.
    #[serde(rename = "idle_timeout_us", default, with = "opt_us")]
    pub idle_timeout: Option<Duration>,
    /// A response that makes no progress this long (the client does not
    /// read) is reset, and so is a connection that does not close this long
    /// after our FIN (`--http-send-timeout`). `None`: no limit. Default 60 s.
    #[serde(rename = "send_timeout_us", default, with = "opt_us")]
    pub send_timeout: Option<Duration>,
    /// Send `Date` (RFC 9110 §6.6.1) when the host has a clock. Default on.
    #[serde(default)]
    pub date: bool,
}

/// `Option<Duration>` as whole microseconds, `null` for none.
mod opt_us {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_micros))
    }
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
            header_timeout: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(75)),
            send_timeout: Some(Duration::from_secs(60)),
            date: true,
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
        for (name, t) in [
            ("header_timeout", config.header_timeout),
            ("idle_timeout", config.idle_timeout),
            ("send_timeout", config.send_timeout),
        ] {
            if t.is_some_and(|t| t.is_zero()) {
                return Err(format!("http: {name} must be non-zero (None disables it)"));
            }
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

/// How the request body being read is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyIn {
    /// No body (or it has been read).
    None,
    /// `Content-Length`: bytes still to read.
    Length(u64),
    /// `Transfer-Encoding: chunked` (RFC 9112 §7.1), at this point.
    Chunked(Chunk),
}

/// Where a chunked body's parser stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// At the CRLF after chunk data.
    DataEnd,
    /// In the trailer section after the last chunk.
    Trailer,
}

/// What reading request body bytes came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyRead {
    /// Consumed this many; the body goes on.
    More(usize),
    /// Consumed this many; the body is complete.
    Done(usize),
    /// The body is malformed or too large: answer this status and close.
    Bad(u16),
}

/// Request methods we tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    /// POST or PUT (accepted on `/discard` only).
    Upload,
    Other,
}

/// What one timer key stands for (the top bits of [`Timer::key`]).
const T_HEADER: u64 = 1;
const T_IDLE: u64 = 2;
const T_SEND: u64 = 3;
const T_BODY: u64 = 4;
const T_LINGER: u64 = 5;

/// A `/discard` upload whose answer waits for the end of its body.
#[derive(Clone, Copy, Debug)]
struct Upload {
    keep: bool,
    v10: bool,
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
    /// The request body being read (skipped).
    body_in: BodyIn,
    /// Decoded body bytes read so far for the current request, and its limit.
    body_read: u64,
    body_limit: u64,
    /// Trailer-section bytes of the current chunked body.
    trailer_bytes: usize,
    /// An upload waiting for its body before it is answered.
    upload: Option<Upload>,
    /// The last `on_data` left part of a request head unconsumed.
    partial: bool,
    /// Bytes written so far (send progress, for the send timer).
    written: u64,
    /// Request body bytes consumed so far (for the body timer).
    body_progress: u64,
    /// The last `Date` value made, for its second.
    date: (u64, String),
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
            body_in: BodyIn::None,
            body_read: 0,
            body_limit: 0,
            trailer_bytes: 0,
            upload: None,
            partial: false,
            written: 0,
            body_progress: 0,
            date: (u64::MAX, String::new()),
        }
    }

    fn in_progress(&self) -> bool {
        self.head_pos < self.head.len() || !matches!(self.body, Body::None)
    }

    /// Writes as much of the response in progress as the credit allows,
    /// then answers an upload whose body is complete; when everything is
    /// written and the connection should close, closes.
    fn pump(&mut self, io: &mut Io<'_>) {
        let before = io.credit();
        self.pump_response(io);
        if !self.in_progress() && self.body_in == BodyIn::None && !self.closed {
            if let Some(u) = self.upload.take() {
                self.buf.clear();
                let _ = writeln!(self.buf, "received {} bytes", self.body_read);
                let len = self.buf.len() as u64;
                self.start(
                    200,
                    Some("text/plain; charset=utf-8"),
                    Some(len),
                    u.keep,
                    u.v10,
                    "",
                );
                self.body = Body::Buf { pos: 0 };
                self.pump_response(io);
            }
        }
        self.written += (before - io.credit()) as u64;
    }

    fn pump_response(&mut self, io: &mut Io<'_>) {
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
            if self.close_after && !self.closed && self.upload.is_none() {
                self.closed = true;
                io.close();
            }
        }
    }

    /// The `Date` field value for the host's current second, if it has a
    /// clock and the field is on.
    fn date_value(&mut self) -> Option<&str> {
        if !self.shared.config.date {
            return None;
        }
        let us = self.shared.board.unix_us();
        if us == 0 {
            return None;
        }
        let secs = us / 1_000_000;
        if self.date.0 != secs {
            let t = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            self.date = (secs, httpdate::fmt_http_date(t));
        }
        Some(&self.date.1)
    }

    /// Starts a response: status line and header fields into `head`.
    /// `ctype` and `len` are left out when `None` (a 304 carries neither).
    fn start(
        &mut self,
        code: u16,
        ctype: Option<&str>,
        len: Option<u64>,
        keep: bool,
        v10: bool,
        extra: &str,
    ) {
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        self.head_pos = 0;
        let _ = write!(
            head,
            "HTTP/1.1 {code} {}\r\nServer: {SERVER}\r\n",
            reason(code)
        );
        if let Some(d) = self.date_value() {
            let _ = write!(head, "Date: {d}\r\n");
        }
        if let Some(t) = ctype {
            let _ = write!(head, "Content-Type: {t}\r\n");
        }
        if let Some(n) = len {
            let _ = write!(head, "Content-Length: {n}\r\n");
        }
        if !keep {
            head.extend_from_slice(b"Connection: close\r\n");
        } else if v10 {
            // RFC 9112 §9.3: an HTTP/1.0 client needs keep-alive confirmed.
            head.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        head.extend_from_slice(extra.as_bytes());
        head.extend_from_slice(b"\r\n");
        self.head = head;
        if !keep {
            self.close_after = true;
        }
    }

    /// A short text response; `keep` false closes the connection after it.
    fn simple(&mut self, code: u16, keep: bool, v10: bool, head_only: bool, extra: &str) {
        self.buf.clear();
        let _ = writeln!(self.buf, "{code} {}", reason(code));
        let len = self.buf.len() as u64;
        self.start(
            code,
            Some("text/plain; charset=utf-8"),
            Some(len),
            keep,
            v10,
            extra,
        );
        self.body = if head_only {
            Body::None
        } else {
            Body::Buf { pos: 0 }
        };
    }

    /// Refuses the request with `code` and closes after the answer (a
    /// request whose framing or head cannot be trusted). Counted.
    fn refuse(&mut self, code: u16, v10: bool, head_only: bool) {
        self.shared.board.count(ServiceCounter::HttpRefused);
        self.body_in = BodyIn::None;
        self.upload = None;
        self.simple(code, false, v10, head_only, "");
    }

    /// Reads request body bytes from `data` (the body framing in
    /// `body_in`), counting them against `body_limit`.
    fn read_body(&mut self, data: &[u8]) -> BodyRead {
        let mut used = 0;
        loop {
            let rest = &data[used..];
            match self.body_in {
                BodyIn::None => return BodyRead::Done(used),
                BodyIn::Length(left) => {
                    let k = left.min(rest.len() as u64);
                    used += k as usize;
                    self.body_read += k;
                    if left == k {
                        self.body_in = BodyIn::None;
                        return BodyRead::Done(used);
                    }
                    self.body_in = BodyIn::Length(left - k);
                    return BodyRead::More(used);
                }
                BodyIn::Chunked(Chunk::Size) => {
                    // chunk = chunk-size [ chunk-ext ] CRLF (RFC 9112 §7.1).
                    let Some(end) = rest.iter().position(|b| *b == b'\n') else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return BodyRead::Bad(400);
                        }
                        return BodyRead::More(used);
                    };
                    if end > MAX_CHUNK_LINE {
                        return BodyRead::Bad(400);
                    }
                    let Some(size) = chunk_size(&rest[..end]) else {
                        return BodyRead::Bad(400);
                    };
                    used += end + 1;
                    if size == 0 {
                        self.body_in = BodyIn::Chunked(Chunk::Trailer);
                    } else if self.body_read.saturating_add(size) > self.body_limit {
                        return BodyRead::Bad(413);
                    } else {
                        self.body_in = BodyIn::Chunked(Chunk::Data(size));
                    }
                }
                BodyIn::Chunked(Chunk::Data(left)) => {
                    let k = left.min(rest.len() as u64);
                    used += k as usize;
                    self.body_read += k;
                    if left > k {
                        self.body_in = BodyIn::Chunked(Chunk::Data(left - k));
                        return BodyRead::More(used);
                    }
                    self.body_in = BodyIn::Chunked(Chunk::DataEnd);
                }
                BodyIn::Chunked(Chunk::DataEnd) => match rest {
                    [] | [b'\r'] => return BodyRead::More(used),
                    [b'\r', b'\n', ..] => {
                        used += 2;
                        self.body_in = BodyIn::Chunked(Chunk::Size);
                    }
                    // RFC 9112 §2.2: a bare LF may be taken as a line end.
                    [b'\n', ..] => {
                        used += 1;
                        self.body_in = BodyIn::Chunked(Chunk::Size);
                    }
                    _ => return BodyRead::Bad(400),
                },
                BodyIn::Chunked(Chunk::Trailer) => {
                    // trailer-section = *( field-line CRLF ) CRLF; fields
                    // are read and dropped (RFC 9112 §7.1.2), within the
                    // head limit.
                    let Some(end) = rest.iter().position(|b| *b == b'\n') else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return BodyRead::Bad(431);
                        }
                        return BodyRead::More(used);
                    };
                    let line = &rest[..end];
                    used += end + 1;
                    if line.is_empty() || line == b"\r" {
                        self.body_in = BodyIn::None;
                        return BodyRead::Done(used);
                    }
                    self.trailer_bytes += end + 1;
                    if self.trailer_bytes > self.shared.config.max_header_bytes {
                        return BodyRead::Bad(431);
                    }
                }
            }
        }
    }

    /// Parses and answers the request at the start of `data`. Returns how
    /// many bytes it consumed (0: the request head is not complete yet).
    fn request(&mut self, data: &[u8]) -> usize {
        let shared = Arc::clone(&self.shared);
        let cfg = &shared.config;
        // RFC 9112 §2.3: a higher minor version of HTTP/1 is answered as
        // HTTP/1.1; another major version gets 505 (RFC 9110 §15.6.6).
        let line = request_line(data);
        let mut patched: Option<Vec<u8>> = None;
        if let Some((start, end)) = line {
            match version_of(&data[start..end]) {
                Version::Ok => {}
                Version::LaterMinor(at) => {
                    let mut v = data.to_vec();
                    v[start + at] = b'1';
                    patched = Some(v);
                }
                Version::Unsupported => {
                    self.refuse(505, false, false);
                    return data.len();
                }
            }
        }
        let src: &[u8] = patched.as_deref().unwrap_or(data);
        let line_too_long = match line {
            Some((s, e)) => e - s > cfg.max_header_bytes,
            None => data.len() > cfg.max_header_bytes,
        };
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        let mut req = httparse::Request::new(&mut slots);
        let hlen = match req.parse(src) {
            Ok(httparse::Status::Partial) => {
                if data.len() > cfg.max_header_bytes {
                    self.refuse(if line_too_long { 414 } else { 431 }, false, false);
                    return data.len();
                }
                return 0;
            }
            Ok(httparse::Status::Complete(n)) => n,
            Err(httparse::Error::TooManyHeaders) => {
                self.refuse(431, false, false);
                return data.len();
            }
            Err(httparse::Error::Version) => {
                self.refuse(505, false, false);
                return data.len();
            }
            Err(_) => {
                self.refuse(if line_too_long { 414 } else { 400 }, false, false);
                return data.len();
            }
        };
        if hlen > cfg.max_header_bytes || req.headers.len() > cfg.max_headers {
            self.refuse(if line_too_long { 414 } else { 431 }, false, false);
            return data.len();
        }
        self.requests = self.requests.saturating_add(1);
        let v10 = req.version == Some(0);
        let method = match req.method {
            Some("GET") => Method::Get,
            Some("HEAD") => Method::Head,
            Some("POST") | Some("PUT") => Method::Upload,
            _ => Method::Other,
        };
        let head_only = method == Method::Head;

        // Header fields that shape the exchange.
        let mut conn_close = false;
        let mut conn_keep = false;
        let mut host = false;
        let mut length: Option<u64> = None;
        let mut bad = false;
        let mut te: Option<bool> = None; // Some(true): exactly "chunked"
        let mut expect_continue = false;
        let mut expect_other = false;
        let mut cond = Conditions::default();
        for h in req.headers.iter() {
            let name = h.name;
            let value = h.value.trim_ascii();
            if name.eq_ignore_ascii_case("connection") {
                // RFC 9110 §7.6.1: a comma-separated list of options.
                for opt in value.split(|b| *b == b',') {
                    let opt = opt.trim_ascii();
                    conn_close |= opt.eq_ignore_ascii_case(b"close");
                    conn_keep |= opt.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case("host") {
                host = true;
            } else if name.eq_ignore_ascii_case("content-length") {
                // RFC 9112 §6.3 rule 5: an invalid or conflicting length is
                // unrecoverable.
                match parse_decimal(value) {
                    Some(n) if length.is_none() || length == Some(n) => length = Some(n),
                    _ => bad = true,
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Only "chunked" alone is understood; a second field or
                // another coding is not (RFC 9112 §6.1).
                te = Some(te.is_none() && value.eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case("expect") {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    expect_other = true;
                }
            } else if name.eq_ignore_ascii_case("range") {
                cond.range = Some(value);
            } else if name.eq_ignore_ascii_case("if-range") {
                cond.if_range = Some(value);
            } else if name.eq_ignore_ascii_case("if-none-match") {
                cond.if_none_match = Some(value);
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
        // The refusals in the order the framing needs them: what makes the
        // body's length unknown first (the connection cannot be kept), then
        // Host, expectations, the method, the body's size.
        if bad {
            self.refuse(400, v10, head_only);
            return data.len();
        }
        if let Some(chunked) = te {
            if length.is_some() || v10 {
                // RFC 9112 §6.1/§6.3 rule 3: Transfer-Encoding with
                // Content-Length (a smuggling attempt, maybe), or in an
                // HTTP/1.0 request: the framing is faulty; close.
                self.refuse(400, v10, head_only);
                return data.len();
            }
            if !chunked {
                // RFC 9112 §6.1: a transfer coding we do not understand:
                // 501, and the body cannot be skipped.
                self.refuse(501, v10, head_only);
                return data.len();
            }
        }
        if !v10 && !host {
            // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request)
            // status code to any HTTP/1.1 request message that lacks a Host
            // header field".
            self.refuse(400, v10, head_only);
            return data.len();
        }
        // RFC 9110 §10.1.1: an HTTP/1.0 client's expectation is ignored.
        let expect_continue = expect_continue && !v10;
        if expect_other && !v10 {
            self.refuse(417, v10, head_only);
            return data.len();
        }
        let has_body = te.is_some() || length.is_some_and(|n| n > 0);
        let target = req.path.unwrap_or("");
        let path = request_path(target);
        let decoded = path.and_then(|p| percent_decode(p.as_bytes()));
        let is_discard = decoded.as_deref() == Some(b"/discard".as_slice());
        let upload = method == Method::Upload && is_discard;
        let allow = if is_discard {
            "Allow: POST, PUT\r\n"
        } else {
            "Allow: GET, HEAD\r\n"
        };
        // Everything but GET/HEAD, and GET/HEAD of /discard, is refused
        // unless it is an upload to /discard.
        let refused_method =
            !upload && (is_discard || !matches!(method, Method::Get | Method::Head));
        let limit = if upload { u64::MAX } else { cfg.max_body_bytes };
        let too_large = length.is_some_and(|n| n > limit);
        if has_body && expect_continue && !upload {
            // RFC 9110 §10.1.1: the final status at once instead of 100;
            // the client holds its body back, so close rather than wait
            // for it (RFC 9110 §15.5: say so).
            if refused_method {
                self.shared.board.count(ServiceCounter::HttpRefused);
                self.simple(405, false, v10, head_only, allow);
                return hlen;
            }
            if too_large {
                self.refuse(413, v10, head_only);
                return hlen;
            }
            keep = false;
        }
        if refused_method {
            // RFC 9110 §15.5.6: 405 carries an Allow header field. The body
            // is read and dropped (within the limit) so the connection
            // stays usable.
            self.shared.board.count(ServiceCounter::HttpRefused);
            if too_large {
                self.simple(405, false, v10, false, allow);
                return data.len();
            }
            self.begin_body(length, te.is_some(), limit);
            self.simple(405, keep, v10, false, allow);
            return hlen;
        }
        if too_large {
            self.refuse(413, v10, head_only);
            return data.len();
        }
        self.begin_body(length, te.is_some(), limit);
        if upload {
            if expect_continue {
                self.head.clear();
                self.head
                    .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                self.head_pos = 0;
            }
            if !keep {
                self.close_after = true;
            }
            self.upload = Some(Upload { keep, v10 });
            return hlen;
        }
        match (path, decoded) {
            (Some(p), Some(d)) => self.route(p, &d, keep, v10, head_only, &cond, method),
            _ => self.simple(400, keep, v10, head_only, ""),
        }
        hlen
    }

    /// Starts reading a request body of `length` bytes or chunked.
    fn begin_body(&mut self, length: Option<u64>, chunked: bool, limit: u64) {
        self.body_read = 0;
        self.trailer_bytes = 0;
        self.body_limit = limit;
        self.body_in = if chunked {
            BodyIn::Chunked(Chunk::Size)
        } else {
            match length {
                Some(n) if n > 0 => BodyIn::Length(n),
                _ => BodyIn::None,
            }
        };
    }

    /// Chooses the response for a GET or HEAD of `path` (`decoded`: its
    /// percent-decoding).
    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        path: &str,
        decoded: &[u8],
        keep: bool,
        v10: bool,
        head_only: bool,
        cond: &Conditions<'_>,
        method: Method,
    ) {
        let shared = Arc::clone(&self.shared);
        if let Some(root) = &shared.root {
            match resolve(root, path) {
                Ok(file) => {
                    self.serve_file(&file, keep, v10, head_only, cond, method);
                    return;
                }
                Err(Miss::BadRequest) => {
                    self.simple(400, keep, v10, head_only, "");
                    return;
                }
                Err(Miss::NotFound) => {} // Try the built-in pages.
            }
        }
        // Built-in paths match after percent-decoding; one that is not
        // UTF-8 is none of them.
        let path = std::str::from_utf8(decoded).unwrap_or("");
        if path == "/" {
            self.status_page();
            let len = self.buf.len() as u64;
            self.start(
                200,
                Some("text/html; charset=utf-8"),
                Some(len),
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
            self.start(
                200,
                Some(ctype),
                Some(len),
                keep,
                v10,
                "Cache-Control: no-store\r\n",
            );
            self.body = if head_only {
                Body::None
            } else {
                Body::Buf { pos: 0 }
            };
        } else if let Some(n) = path.strip_prefix("/bytes/") {
            match parse_decimal(n.as_bytes()) {
                Some(n) if n <= self.shared.config.max_bytes_n => {
                    self.start(
                        200,
                        Some("application/octet-stream"),
                        Some(n),
                        keep,
                        v10,
                        "",
                    );
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

    fn serve_file(
        &mut self,
        path: &Path,
        keep: bool,
        v10: bool,
        head_only: bool,
        cond: &Conditions<'_>,
        method: Method,
    ) {
        // O_NOFOLLOW: the path was canonical a moment ago; if its last
        // component has since become a symlink, refuse rather than follow.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .and_then(|f| f.metadata().map(|m| (f, m)));
        match opened {
            Ok((mut file, meta)) if meta.is_file() => {
                let len = meta.len();
                let etag = format!("\"{:x}-{:x}-{:x}\"", meta.mtime(), meta.mtime_nsec(), len);
                let ctype = content_type(path);
                // RFC 9110 §13.2.2: If-None-Match before Range.
                if cond.if_none_match.is_some_and(|v| etag_matches(v, &etag)) {
                    let extra = format!("ETag: {etag}\r\n");
                    self.start(304, None, None, keep, v10, &extra);
                    self.body = Body::None;
                    return;
                }
                // RFC 9110 §14.2: Range is defined for GET only; If-Range
                // must match our (strong) ETag exactly, else the whole file.
                let range = match cond.range {
                    Some(r) if method == Method::Get => {
                        if cond.if_range.is_none_or(|v| v == etag.as_bytes()) {
                            parse_range(r, len)
                        } else {
                            Range::Whole
                        }
                    }
                    _ => Range::Whole,
                };
                match range {
                    Range::Whole => {
                        let extra = format!("ETag: {etag}\r\nAccept-Ranges: bytes\r\n");
                        self.start(200, Some(ctype), Some(len), keep, v10, &extra);
                        self.body = if head_only || len == 0 {
                            Body::None
                        } else {
                            Body::File { file, left: len }
                        };
                    }
                    Range::Unsatisfiable => {
                        // RFC 9110 §15.5.17: 416 with the current length.
                        let extra = format!("Content-Range: bytes */{len}\r\n");
                        self.simple(416, keep, v10, head_only, &extra);
                    }
                    Range::Part(first, last) => {
                        if file.seek(SeekFrom::Start(first)).is_err() {
                            self.simple(500, false, v10, head_only, "");
                            return;
                        }
                        let n = last - first + 1;
                        let extra = format!(
                            "ETag: {etag}\r\nAccept-Ranges: bytes\r\nContent-Range: bytes {first}-{last}/{len}\r\n"
                        );
                        self.start(206, Some(ctype), Some(n), keep, v10, &extra);
                        self.body = Body::File { file, left: n };
                    }
                }
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
/// "drops": {reason: n}, "daemon": {counter: n}}`, and with forwarding
/// `"forwards": {rule: {counter: n}}`.
struct StatsDoc<'a> {
    st: &'a Status,
    uptime_ms: u64,
}

impl serde::Serialize for StatsDoc<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let st = self.st;
        let mut m = s.serialize_struct("Stats", 10)?;
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
        if !st.forwards.is_empty() {
            m.serialize_field(
                "forwards",
                &MapOf(|| {
                    st.forwards
                        .iter()
                        .map(|(name, c)| (name.as_str(), MapOf(move || c.iter().copied())))
                }),
            )?;
        }
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
        self.partial = false;
        let mut used = 0;
        loop {
            if self.body_in != BodyIn::None {
                match self.read_body(&data[used..]) {
                    BodyRead::More(n) => {
                        used += n;
                        self.body_progress += n as u64;
                        self.pump(io);
                        if self.closed || io.wants_abort() {
                            return data.len();
                        }
                        return used;
                    }
                    BodyRead::Done(n) => {
                        used += n;
                        self.body_progress += n as u64;
                    }
                    BodyRead::Bad(code) => {
                        if self.in_progress() {
                            // Already answering (405): end after that.
                            self.body_in = BodyIn::None;
                            self.upload = None;
                            self.close_after = true;
                        } else {
                            self.refuse(code, false, false);
                        }
                        self.pump(io);
                        return data.len();
                    }
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
                self.partial = true;
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
        // any), then close. An incomplete request (or body) is dropped.
        self.close_after = true;
        if self.body_in != BodyIn::None {
            self.body_in = BodyIn::None;
            self.upload = None;
        }
        if !self.closed {
            self.pump(io);
        }
    }

    fn timer(&self) -> Option<Timer> {
        let c = &self.shared.config;
        let (kind, n, after) = if self.closed {
            (T_LINGER, 0, c.send_timeout?)
        } else if self.in_progress() {
            // Inactivity: every byte written restarts it.
            (T_SEND, self.written, c.send_timeout?)
        } else if self.body_in != BodyIn::None {
            (T_BODY, self.body_progress, c.header_timeout?)
        } else if self.partial || self.requests == 0 {
            // A total deadline for the head: the key stays until the
            // request is complete, whatever trickles in.
            (T_HEADER, u64::from(self.requests), c.header_timeout?)
        } else {
            (T_IDLE, u64::from(self.requests), c.idle_timeout?)
        };
        Some(Timer {
            key: kind << 60 | (n & ((1 << 60) - 1)),
            after,
        })
    }

    fn on_timeout(&mut self, io: &mut Io<'_>) {
        let board = Arc::clone(&self.shared.board);
        if self.closed || self.in_progress() {
            // The peer does not read (or does not close after our FIN):
            // nothing more can be said; reset, freeing the send buffer.
            board.count(ServiceCounter::HttpSendTimeouts);
            io.abort();
        } else if self.partial || self.body_in != BodyIn::None {
            // RFC 9110 §15.5.9: 408, and close.
            board.count(ServiceCounter::HttpHeaderTimeouts);
            self.body_in = BodyIn::None;
            self.upload = None;
            self.simple(408, false, false, false, "");
            self.pump(io);
        } else {
            // Nothing of a request came (a pre-connection, or keep-alive
            // idle): close quietly (RFC 9112 §9.5).
            board.count(if self.requests == 0 {
                ServiceCounter::HttpHeaderTimeouts
            } else {
                ServiceCounter::HttpIdleTimeouts
            });
            self.closed = true;
            io.close();
        }
    }
}

/// The request line's span in `data` (after the empty lines RFC 9112 §2.2
/// lets a server skip), without its CRLF; `None` until it is complete.
fn request_line(data: &[u8]) -> Option<(usize, usize)> {
    let start = data
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(data.len());
    let nl = data[start..].iter().position(|b| *b == b'\n')? + start;
    let end = if nl > start && data[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    Some((start, end))
}

/// What a request line's HTTP-version (RFC 9112 §2.3) comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    /// 1.0, 1.1, or not a version at all (the parser answers 400).
    Ok,
    /// HTTP/1.x with x > 1: answered as HTTP/1.1; the minor digit is at
    /// this offset in the line.
    LaterMinor(usize),
    /// Another major version: 505.
    Unsupported,
}

fn version_of(line: &[u8]) -> Version {
    let Some(sp) = line.iter().rposition(|b| *b == b' ') else {
        return Version::Ok;
    };
    match &line[sp + 1..] {
        [b'H', b'T', b'T', b'P', b'/', maj, b'.', min]
            if maj.is_ascii_digit() && min.is_ascii_digit() =>
        {
            match (maj, min) {
                (b'1', b'0' | b'1') => Version::Ok,
                (b'1', _) => Version::LaterMinor(sp + 8),
                _ => Version::Unsupported,
            }
        }
        _ => Version::Ok,
    }
}

/// The path of a request target: origin-form, or absolute-form (RFC 9112
/// §3.2.2) with its path kept; without query or fragment. `None` when it
/// does not start with `/`.
fn request_path(target: &str) -> Option<&str> {
    let mut path = target;
    if let Some(rest) = path
        .strip_prefix("http://")
        .or_else(|| path.strip_prefix("https://"))
    {
        path = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.starts_with('/').then_some(path)
}

/// The conditional and range header fields of a request (RFC 9110 §13, §14).
#[derive(Clone, Copy, Debug, Default)]
struct Conditions<'a> {
    range: Option<&'a [u8]>,
    if_range: Option<&'a [u8]>,
    if_none_match: Option<&'a [u8]>,
}

/// The size of a chunk-size line (RFC 9112 §7.1): hex digits, then
/// optional whitespace and chunk extensions (ignored, §7.1.1), then an
/// optional CR. `None` when malformed or beyond `u64`.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return None;
    }
    line[..digits]
        .iter()
        .try_fold(0u64, |acc, d| Some(acc << 4 | u64::from(hex(*d)?)))
}

/// What a `Range` field asks of a representation of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Range {
    /// Ignore it: the whole representation (another unit, several ranges,
    /// or an invalid one; RFC 9110 §14.2 lets a server ignore them).
    Whole,
    /// No byte of it exists: 416.
    Unsatisfiable,
    /// Bytes `first..=last`.
    Part(u64, u64),
}

/// One `bytes=` range-spec (RFC 9110 §14.1.2): `a-b`, `a-`, or `-n`.
fn parse_range(v: &[u8], len: u64) -> Range {
    let Some(spec) = v
        .get(..6)
        .filter(|u| u.eq_ignore_ascii_case(b"bytes="))
        .map(|_| v[6..].trim_ascii())
    else {
        return Range::Whole;
    };
    if spec.contains(&b',') {
        return Range::Whole;
    }
    let Some(dash) = spec.iter().position(|b| *b == b'-') else {
        return Range::Whole;
    };
    let (a, b) = (spec[..dash].trim_ascii(), spec[dash + 1..].trim_ascii());
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Range::Whole,
        (true, false) => match parse_decimal(b) {
            // suffix-range: the last n bytes.
            Some(0) => Range::Unsatisfiable,
            Some(_) if len == 0 => Range::Unsatisfiable,
            Some(n) => Range::Part(len - n.min(len), len - 1),
            None => Range::Whole,
        },
        (false, _) => {
            let Some(first) = parse_decimal(a) else {
                return Range::Whole;
            };
            let last = if b.is_empty() {
                u64::MAX
            } else {
                match parse_decimal(b) {
                    Some(l) if l >= first => l,
                    _ => return Range::Whole,
                }
            };
            if first >= len {
                Range::Unsatisfiable
            } else {
                Range::Part(first, last.min(len - 1))
            }
        }
    }
}

/// Whether an `If-None-Match` value matches `etag`: `*`, or a list of
/// entity tags compared weakly (RFC 9110 §13.1.2, §8.8.3.2).
fn etag_matches(v: &[u8], etag: &str) -> bool {
    if v == b"*" {
        return true;
    }
    v.split(|b| *b == b',').any(|t| {
        let t = t.trim_ascii();
        let t = t.strip_prefix(b"W/").unwrap_or(t);
        t == etag.as_bytes()
    })
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
        100 => "Continue",
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
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
            // 1xx and 304 have no content (RFC 9110 §15.2, §15.4.5).
            let bodiless = code < 200 || code == 304;
            let len: usize = if bodiless {
                0
            } else {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .expect("Content-Length always")
                    .1
                    .parse()
                    .unwrap()
            };
            let finals = out.iter().filter(|r: &&Resp| r.code >= 200).count();
            let ho = code >= 200 && head_only.get(finals).copied().unwrap_or(false);
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
        let req = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
        let (s, r) = exchange(&default_service(), req, 1 << 16);
        assert_eq!(r[0].code, 413);
        assert_eq!(r[0].header("Connection"), Some("close"));
        assert!(s.closed);
    }

    #[test]
    fn method_is_checked_before_body_size() {
        // RFC 9110: a method the resource does not allow is 405 whatever
        // the body; too large a body to skip closes the connection.
        let req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
        let (s, r) = exchange(&default_service(), req, 1 << 16);
        assert_eq!(r[0].code, 405);
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
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            1 << 16,
        );
        assert_eq!(r[0].code, 501);
        assert!(s.closed);
    }

    // ----- HTTP/1.1 semantics (RFC 9110, RFC 9112) ----------------------------

    #[test]
    fn chunked_body_is_read_and_the_pipelined_request_answered() {
        // RFC 9112 §7.1: sizes in hex, extensions ignored, a trailer
        // section dropped; the 405 comes at once, the next request after.
        let req = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n\
            GET /bytes/3 HTTP/1.1\r\nHost: x\r\n\r\n";
        for chunk in [1, 7, 1 << 16] {
            let mut s = Sim::new(&default_service()).chunk(chunk);
            s.send(req);
            s.run(1 << 16, 10_000);
            let r = parse_all(&s.tx, &[]);
            assert_eq!(r.len(), 2, "chunk {chunk}");
            assert_eq!(r[0].code, 405);
            assert_eq!(r[1].body, pattern(3));
            assert!(!s.closed);
        }
    }

    #[test]
    fn chunked_body_limits_and_errors() {
        let cfg = HttpConfig {
            max_body_bytes: 8,
            ..HttpConfig::default()
        };
        // Over the limit: 413 (before the answer started) and close.
        let req = b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n";
        let (s, r) = exchange(&service(cfg.clone()), req, 1 << 16);
        assert_eq!(r.last().unwrap().code, 200, "GET is answered at once");
        assert!(s.closed, "then closed: the body cannot be skipped");
        // A bad size line: 400 after the answer in progress, close.
        for bad in [b"zz\r\n".as_slice(), b"5 x\r\n", b"11111111111111111\r\n"] {
            let mut req =
                b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            req.extend_from_slice(bad);
            req.extend_from_slice(b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\n\r\n");
            let (s, r) = exchange(&default_service(), &req, 1 << 16);
            assert_eq!(r.len(), 1, "{}", String::from_utf8_lossy(bad));
            assert!(s.closed);
        }
        // Missing CRLF after chunk data.
        let req = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX";
        let (s, _) = exchange(&default_service(), req, 1 << 16);
        assert!(s.closed);
        // Content-Length with Transfer-Encoding: 400, close (RFC 9112 §6.3).
        let req = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (s, r) = exchange(&default_service(), req, 1 << 16);
        assert_eq!(r[0].code, 400);
        assert!(s.closed);
        // Transfer-Encoding in HTTP/1.0: faulty framing.
        let req = b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (_, r) = exchange(&default_service(), req, 1 << 16);
        assert_eq!(r[0].code, 400);
        assert_eq!(chunk_size(b"1f"), Some(31));
        assert_eq!(chunk_size(b"A ; name=v\r"), Some(10));
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b"-1"), None);
    }

    #[test]
    fn discard_reads_uploads_with_100_continue() {
        // Expect: 100-continue on a body we will read: 100 first, then
        // the final answer once the body is in (RFC 9110 §10.1.1).
        let mut s = Sim::new(&default_service());
        s.send(b"PUT /discard HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n");
        s.run(1 << 16, 100);
        assert_eq!(s.tx, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.send(&vec![7u8; 100_000]);
        s.send(b"POST /discard HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        s.run(1 << 16, 1000);
        let r = parse_all(&s.tx, &[]);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].code, r[1].code, r[2].code), (100, 200, 200));
        assert_eq!(r[1].body, b"received 100000 bytes\n");
        assert_eq!(r[2].body, b"received 3 bytes\n");
        assert!(!s.closed);
        let (_, r) = exchange(
            &default_service(),
            b"GET /discard HTTP/1.1\r\nHost: x\r\n\r\n",
            1 << 16,
        );
        assert_eq!(r[0].code, 405);
        assert_eq!(r[0].header("Allow"), Some("POST, PUT"));
    }

    #[test]
    fn expect_on_a_refused_request_gets_the_final_status_at_once() {
        // `curl -T file` (PUT with Expect): 405 without waiting for the
        // body, and close, since the client holds the body back.
        let req = b"PUT /f.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n";
        let (s, r) = exchange(&default_service(), req, 1 << 16);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].code, 405);
        assert_eq!(r[0].header("Connection"), Some("close"));
        assert!(s.closed);
        let req =
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n";
        let (_, r) = exchange(&default_service(), req, 1 << 16);
        assert_eq!(r[0].code, 413);
        let req = b"GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n";
        let (s, r) = exchange(&default_service(), req, 1 << 16);
        assert_eq!(r[0].code, 417);
        assert!(s.closed);
        // HTTP/1.0: the expectation is ignored.
        let req = b"GET /bytes/2 HTTP/1.0\r\nExpect: teapot\r\n\r\n";
        let (_, r) = exchange(&default_service(), req, 1 << 16);
        assert_eq!(r[0].code, 200);
    }

    #[test]
    fn versions() {
        // RFC 9112 §2.3: HTTP/1.9 is answered as 1.1; 2.0 and 0.9 get 505.
        let (s, r) = exchange(
            &default_service(),
            b"GET /bytes/4 HTTP/1.9\r\nHost: x\r\n\r\n",
            1 << 16,
        );
        assert_eq!(r[0].code, 200);
        assert_eq!(r[0].body, pattern(4));
        assert!(!s.closed);
        for v in ["HTTP/2.0", "HTTP/3.0", "HTTP/0.9"] {
            let req = format!("GET / {v}\r\nHost: x\r\n\r\n");
            let (s, r) = exchange(&default_service(), req.as_bytes(), 1 << 16);
            assert_eq!(r[0].code, 505, "{v}");
            assert!(s.closed);
        }
        assert_eq!(version_of(b"GET / HTTP/1.1"), Version::Ok);
        assert_eq!(version_of(b"GET / HTTP/1.2"), Version::LaterMinor(13));
    }

    #[test]
    fn long_uri_is_414_long_head_431() {
        let mut req = b"GET /".to_vec();
        req.extend(std::iter::repeat_n(b'a', 64 * 1024 - 10));
        let (s, r) = exchange(&default_service(), &req, 1 << 16);
        assert_eq!(r[0].code, 414);
        assert!(s.closed);
        let mut req = b"GET /".to_vec();
        req.extend(std::iter::repeat_n(b'a', 9000));
        req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        let (_, r) = exchange(&default_service(), &req, 1 << 16);
        assert_eq!(r[0].code, 414);
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 9000));
        let (_, r) = exchange(&default_service(), &req, 1 << 16);
        assert_eq!(r[0].code, 431);
    }

    #[test]
    fn built_in_paths_are_percent_decoded() {
        let (_, r) = exchange(
            &default_service(),
            b"GET /bytes/%31%30 HTTP/1.1\r\nHost: x\r\n\r\n",
            1 << 16,
        );
        assert_eq!(r[0].code, 200);
        assert_eq!(r[0].body, pattern(10));
        let (_, r) = exchange(
            &default_service(),
            b"GET /%73tats HTTP/1.1\r\nHost: x\r\n\r\n",
            1 << 16,
        );
        assert_eq!(r[0].header("Content-Type"), Some("application/json"));
        let (_, r) = exchange(
            &default_service(),
            b"GET /bytes/%zz HTTP/1.1\r\nHost: x\r\n\r\n",
            1 << 16,
        );
        assert_eq!(r[0].code, 400);
    }

    #[test]
    fn date_comes_from_the_board_clock() {
        let b = board();
        let svc = HttpService::new(HttpConfig::default(), b.clone()).unwrap();
        let (_, r) = exchange(&svc, GET_ROOT, 1 << 20);
        assert_eq!(
            r[0].header("Date"),
            None,
            "no clock, no Date (RFC 9110 §6.6.1)"
        );
        // 1994-11-06 08:49:37 UTC, RFC 9110's own example.
        b.set_unix_us(784_111_777_250_000);
        let (_, r) = exchange(&svc, GET_ROOT, 1 << 20);
        assert_eq!(r[0].header("Date"), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
        let off = HttpService::new(
            HttpConfig {
                date: false,
                ..HttpConfig::default()
            },
            b,
        )
        .unwrap();
        let (_, r) = exchange(&off, GET_ROOT, 1 << 20);
        assert_eq!(r[0].header("Date"), None);
    }

    #[test]
    fn ranges_and_etags_on_files() {
        let (_t, svc) = static_setup();
        let r = get(&svc, "/big.bin");
        let etag = r.header("ETag").unwrap().to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
        let ask = |extra: &str| {
            let req = format!("GET /big.bin HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
            let (_, mut r) = exchange(&svc, req.as_bytes(), 1 << 20);
            r.remove(0)
        };
        let full = pattern(200_000);
        let r = ask("Range: bytes=100-199\r\n");
        assert_eq!(r.code, 206);
        assert_eq!(r.header("Content-Range"), Some("bytes 100-199/200000"));
        assert_eq!(r.body, &full[100..200]);
        let r = ask("Range: bytes=199990-\r\n");
        assert_eq!(r.body, &full[199_990..]);
        let r = ask("Range: bytes=-5\r\n");
        assert_eq!(
            r.header("Content-Range"),
            Some("bytes 199995-199999/200000")
        );
        let r = ask("Range: bytes=200000-\r\n");
        assert_eq!(r.code, 416);
        assert_eq!(r.header("Content-Range"), Some("bytes */200000"));
        assert_eq!(
            ask("Range: bytes=0-1,5-6\r\n").code,
            200,
            "several: ignored"
        );
        assert_eq!(ask("Range: lines=1-2\r\n").code, 200);
        assert_eq!(ask("Range: bytes=5-1\r\n").code, 200, "invalid: ignored");
        // If-Range with our ETag applies the range; another one does not.
        let r = ask(&format!("Range: bytes=0-0\r\nIf-Range: {etag}\r\n"));
        assert_eq!(r.code, 206);
        let r = ask("Range: bytes=0-0\r\nIf-Range: \"other\"\r\n");
        assert_eq!(r.code, 200);
        // If-None-Match: 304 without a body, also weakly and in a list.
        for inm in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            "*".into(),
        ] {
            let r = ask(&format!("If-None-Match: {inm}\r\n"));
            assert_eq!(r.code, 304, "{inm}");
            assert_eq!(r.header("ETag"), Some(etag.as_str()));
            assert_eq!(r.header("Content-Length"), None);
        }
        assert_eq!(ask("If-None-Match: \"x\"\r\n").code, 200);
        // HEAD ignores Range (it is defined for GET).
        let (_, r) = exchange(
            &svc,
            b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n",
            1 << 16,
        );
        assert_eq!(r[0].code, 200);
        assert_eq!(parse_range(b"bytes=-0", 10), Range::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-20", 10), Range::Part(0, 9));
        assert_eq!(parse_range(b"bytes=3-100", 10), Range::Part(3, 9));
    }

    // ----- timers ------------------------------------------------------------

    /// Drives one handler's timer as a host does: rearm after each call,
    /// fire when due. Returns the deadline after the run.
    fn tick(s: &mut Sim, now: u64) -> Option<tcp::Instant> {
        let now = tcp::Instant::from_millis(now);
        s.driver.rearm(now);
        if s.driver.deadline().is_some_and(|d| d <= now) {
            let mut out = Vec::new();
            let step = s.driver.timeout(now, &mut out, 1 << 16);
            s.tx.extend_from_slice(&out);
            s.closed |= step.close;
            s.aborted |= step.abort;
        }
        s.driver.rearm(now)
    }

    fn timed() -> HttpService {
        service(HttpConfig {
            header_timeout: Some(Duration::from_secs(2)),
            idle_timeout: Some(Duration::from_secs(5)),
            send_timeout: Some(Duration::from_secs(3)),
            ..HttpConfig::default()
        })
    }

    #[test]
    fn header_timeout_is_a_total_deadline() {
        // Slowloris: a byte a second keeps nothing alive; 408 at 2 s.
        let mut s = Sim::new(&timed());
        assert_eq!(tick(&mut s, 0), Some(tcp::Instant::from_secs(2)));
        for (t, b) in [(500, b"G"), (1000, b"E"), (1500, b"T")] {
            s.send(b);
            s.run(1 << 16, 10);
            assert_eq!(tick(&mut s, t), Some(tcp::Instant::from_secs(2)));
        }
        tick(&mut s, 2000);
        assert!(
            s.tx.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"),
            "{:?}",
            String::from_utf8_lossy(&s.tx)
        );
        assert!(s.closed);
        // Then the peer has the send timeout to close; else a reset.
        assert_eq!(tick(&mut s, 2000), Some(tcp::Instant::from_secs(5)));
        tick(&mut s, 5000);
        assert!(s.aborted);
    }

    #[test]
    fn silent_connection_closes_quietly_and_idle_keepalive_later() {
        let mut s = Sim::new(&timed());
        tick(&mut s, 0);
        tick(&mut s, 2000);
        assert!(s.closed);
        assert!(s.tx.is_empty(), "nothing came, nothing said");
        let mut s = Sim::new(&timed());
        tick(&mut s, 0);
        s.send(b"GET /bytes/1 HTTP/1.1\r\nHost: x\r\n\r\n");
        s.run(1 << 16, 10);
        assert_eq!(
            tick(&mut s, 1900),
            Some(tcp::Instant::from_millis(6900)),
            "idle: 5 s"
        );
        tick(&mut s, 6900);
        assert!(s.closed);
        assert_eq!(parse_all(&s.tx, &[]).len(), 1);
    }

    #[test]
    fn send_timeout_resets_a_reader_that_stopped() {
        let mut s = Sim::new(&timed());
        tick(&mut s, 0);
        s.send(b"GET /bytes/100000 HTTP/1.1\r\nHost: x\r\n\r\n");
        s.run(1000, 3);
        // Progress restarts it.
        assert_eq!(tick(&mut s, 100), Some(tcp::Instant::from_millis(3100)));
        s.run(1000, 1);
        assert_eq!(tick(&mut s, 1000), Some(tcp::Instant::from_millis(4000)));
        // No more credit: reset at 4 s.
        tick(&mut s, 4000);
        assert!(s.aborted);
    }

    #[test]
    fn no_timers_when_off() {
        let mut s = Sim::new(&service(HttpConfig {
            header_timeout: None,
            idle_timeout: None,
            send_timeout: None,
            ..HttpConfig::default()
        }));
        assert_eq!(tick(&mut s, 0), None);
        s.send(b"GET / HT");
        s.run(1 << 16, 10);
        assert_eq!(tick(&mut s, 1), None);
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
