//! End to end through the real TCP: a client `tcp::Endpoint` talks to a
//! server `tcp::Endpoint` whose connections are served by the `InlineHost`
//! (echo, discard, HTTP), over a virtual link with latency, in virtual time.
//! No sockets, no threads, no clock: every run is the same.
#![allow(clippy::unwrap_used)]

use daemon::services::{
    Discard, Echo, HttpConfig, HttpService, InlineConfig, InlineHost, Status, StatusBoard,
};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tcp::{ConnId, Duration, Endpoint, Event, Instant};

const CLIENT: &str = "10.0.0.1";
const SERVER: &str = "10.0.0.2";
const ECHO: u16 = 7;
const DISCARD: u16 = 9;
const HTTP: u16 = 80;

/// One way of the link: packets in flight with their arrival times.
type Wire = VecDeque<(Instant, Vec<u8>)>;

/// Two endpoints joined by a link with a fixed one-way latency.
struct Pair {
    client: Endpoint,
    server: Endpoint,
    host: InlineHost,
    now: Instant,
    latency: Duration,
    to_server: Wire,
    to_client: Wire,
    buf: Vec<u8>,
    /// Events the client's application has not looked at yet.
    client_events: VecDeque<Event>,
    /// `process_events` calls that stopped at the host's round limit.
    saturations: u64,
}

fn config(addr: &str, seed: u64) -> tcp::Config {
    tcp::Config {
        seed,
        addrs: vec![addr.parse().unwrap()],
        ..tcp::Config::default()
    }
}

impl Pair {
    fn new() -> Pair {
        Pair::with_host(InlineConfig::default())
    }

    fn with_host(host_config: InlineConfig) -> Pair {
        let client = Endpoint::new(config(CLIENT, 1)).unwrap();
        let mut server = Endpoint::new(config(SERVER, 2)).unwrap();
        let board = StatusBoard::frozen(Status::default(), std::time::Duration::ZERO);
        let mut host = InlineHost::new(host_config);
        host.add_service(ECHO, Arc::new(Echo));
        host.add_service(DISCARD, Arc::new(Discard));
        host.add_service(
            HTTP,
            Arc::new(HttpService::new(HttpConfig::default(), board).unwrap()),
        );
        host.listen(&mut server, 128).unwrap();
        let mtu = client.config().mtu;
        Pair {
            client,
            server,
            host,
            now: Instant::ZERO,
            latency: Duration::from_micros(50),
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            buf: vec![0; mtu.max(2048)],
            client_events: VecDeque::new(),
            saturations: 0,
        }
    }

    fn connect(&mut self, port: u16) -> ConnId {
        let local: IpAddr = CLIENT.parse().unwrap();
        let remote = SocketAddr::new(SERVER.parse().unwrap(), port);
        self.client.connect(self.now, local, remote).unwrap()
    }

    /// Moves everything that is due, lets the host serve, and advances the
    /// clock to the next arrival or timer when nothing else is left to do.
    /// Returns false when nothing at all is pending (quiescent).
    fn step(&mut self) -> bool {
        // Outputs of both sides onto the wire.
        let mut moved = false;
        while let Some(n) = self.client.poll_transmit(self.now, &mut self.buf) {
            self.to_server
                .push_back((self.now + self.latency, self.buf[..n].to_vec()));
            moved = true;
        }
        self.host.process_events(&mut self.server);
        // Stopped at its round limit: call again before time moves on (as
        // the reactor does).
        if self.host.saturated() {
            self.saturations += 1;
            moved = true;
        }
        while let Some(n) = self.server.poll_transmit(self.now, &mut self.buf) {
            self.to_client
                .push_back((self.now + self.latency, self.buf[..n].to_vec()));
            moved = true;
        }
        while let Some(ev) = self.client.poll_event() {
            self.client_events.push_back(ev);
            moved = true;
        }
        // Deliver what has arrived.
        while self.to_server.front().is_some_and(|(t, _)| *t <= self.now) {
            let (_, p) = self.to_server.pop_front().unwrap();
            self.server.handle(self.now, &p);
            moved = true;
        }
        while self.to_client.front().is_some_and(|(t, _)| *t <= self.now) {
            let (_, p) = self.to_client.pop_front().unwrap();
            self.client.handle(self.now, &p);
            moved = true;
        }
        if moved {
            return true;
        }
        // Nothing to do now: jump to the next arrival or timer.
        let next = [
            self.to_server.front().map(|(t, _)| *t),
            self.to_client.front().map(|(t, _)| *t),
            self.client.poll_timeout(),
            self.server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) => {
                assert!(
                    t.saturating_since(self.now) < Duration::from_secs(30),
                    "stalled: next wake-up at {t:?}, now {:?}",
                    self.now
                );
                self.now = self.now.max(t);
                self.client.handle_timeout(self.now);
                self.server.handle_timeout(self.now);
                true
            }
            None => false,
        }
    }

    /// Steps until `done` says so; fails after a bound (livelock guard).
    #[track_caller]
    fn drive_until(&mut self, what: &str, mut done: impl FnMut(&mut Pair) -> bool) {
        for _ in 0..2_000_000 {
            if done(self) {
                return;
            }
            if !self.step() && !done(self) {
                panic!("quiescent before {what} (now {:?})", self.now);
            }
        }
        panic!("no {what} after 2 000 000 steps (now {:?})", self.now);
    }

    /// Whether the client saw `ev` (and forgets it).
    fn take_event(&mut self, ev: Event) -> bool {
        match self.client_events.iter().position(|e| *e == ev) {
            Some(i) => {
                self.client_events.remove(i);
                true
            }
            None => false,
        }
    }

    /// Reads whatever the client connection holds into `into`; true at the
    /// end of the stream.
    fn read(&mut self, id: ConnId, into: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 16384];
        loop {
            match self.client.recv(id, &mut chunk) {
                Ok(0) => return true,
                Ok(n) => into.extend_from_slice(&chunk[..n]),
                Err(tcp::Error::WouldBlock) => return false,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn payload(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `data` from the client, then FIN; collects what comes back until
/// the server's FIN. Returns the bytes received.
fn upload_and_collect(p: &mut Pair, port: u16, data: &[u8]) -> Vec<u8> {
    let id = p.connect(port);
    p.drive_until("connection", |p| p.take_event(Event::Connected(id)));
    let mut sent = 0;
    let mut fin_sent = false;
    let mut got = Vec::new();
    let mut eof = false;
    p.drive_until("the server's FIN", |p| {
        if sent < data.len() {
            sent += p.client.send(id, &data[sent..]).unwrap();
        }
        if sent == data.len() && !fin_sent {
            p.client.close(id).unwrap();
            fin_sent = true;
        }
        if !eof {
            eof = p.read(id, &mut got);
        }
        eof
    });
    assert_eq!(sent, data.len());
    got
}

#[test]
fn echo_one_megabyte() {
    let mut p = Pair::new();
    let data = payload(1 << 20);
    let got = upload_and_collect(&mut p, ECHO, &data);
    assert_eq!(got.len(), data.len(), "echoed length");
    assert!(got == data, "echo must be byte-exact");
    let st = p.server.stats();
    assert!(st.bytes_in > 1 << 20 && st.bytes_out > 1 << 20, "{st:?}");
    eprintln!(
        "echo 1 MB: virtual time {:?}, server packets in/out {}/{}, retransmits {}",
        p.now, st.packets_in, st.packets_out, st.retransmits
    );
    p.drive_until("the server to forget the connection", |p| {
        p.host.connection_count() == 0
    });
    assert_eq!(p.host.accepted(), 1);
    // Every byte went through a handler, both ways (the daemon publishes
    // these as bytes_to_services / bytes_from_services).
    assert_eq!(p.host.bytes_to_services(), 1 << 20);
    assert_eq!(p.host.bytes_from_services(), 1 << 20);
}

#[test]
fn round_limit_leaves_work_for_the_next_call() {
    // One round per call: the host says when it stopped with work left, and
    // calling it again (as the reactor does at once) finishes the job.
    let mut p = Pair::with_host(InlineConfig {
        max_rounds: 1,
        ..InlineConfig::default()
    });
    let data = payload(256 * 1024);
    let got = upload_and_collect(&mut p, ECHO, &data);
    assert!(got == data, "echo must be byte-exact");
    assert!(
        p.saturations > 0,
        "one round per call must run out at times"
    );
    p.drive_until("the server to forget the connection", |p| {
        p.host.connection_count() == 0
    });
    p.host.process_events(&mut p.server);
    assert!(!p.host.saturated(), "nothing left to do");
}

#[test]
fn discard_one_megabyte() {
    let mut p = Pair::new();
    let data = payload(1 << 20);
    let got = upload_and_collect(&mut p, DISCARD, &data);
    assert!(got.is_empty(), "discard answers nothing");
    p.drive_until("the server to forget the connection", |p| {
        p.host.connection_count() == 0
    });
    assert_eq!(p.host.bytes_to_services(), 1 << 20);
    assert_eq!(p.host.bytes_from_services(), 0);
}

/// Splits a response into (head, body) once it is complete.
fn split_response(bytes: &[u8]) -> Option<(String, usize)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8(bytes[..end].to_vec()).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .trim()
        .parse()
        .unwrap();
    (bytes.len() >= end + len).then_some((head, end))
}

/// Sends one request on `id` and returns the complete response (head, body).
fn request(p: &mut Pair, id: ConnId, req: &[u8], got: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut sent = 0;
    let mut result = None;
    p.drive_until("a complete response", |p| {
        if sent < req.len() {
            sent += p.client.send(id, &req[sent..]).unwrap();
        }
        p.read(id, got);
        if let Some((head, end)) = split_response(got) {
            result = Some((head, got[end..].to_vec()));
            return true;
        }
        false
    });
    let (head, body) = result.unwrap();
    got.clear();
    (head, body)
}

#[test]
fn http_bytes_byte_exact() {
    let mut p = Pair::new();
    let id = p.connect(HTTP);
    p.drive_until("connection", |p| p.take_event(Event::Connected(id)));
    let mut got = Vec::new();
    let (head, body) = request(
        &mut p,
        id,
        b"GET /bytes/100000 HTTP/1.1\r\nHost: tcpd\r\n\r\n",
        &mut got,
    );
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: 100000\r\n"));
    assert!(head.contains("Server: tcpd/0.1\r\n"));
    assert_eq!(body.len(), 100_000);
    assert!(body == pattern(100_000), "body must be i % 251");
}

#[test]
fn http_keep_alive_two_requests() {
    let mut p = Pair::new();
    let id = p.connect(HTTP);
    p.drive_until("connection", |p| p.take_event(Event::Connected(id)));
    let mut got = Vec::new();
    let (h1, b1) = request(
        &mut p,
        id,
        b"GET /bytes/5000 HTTP/1.1\r\nHost: tcpd\r\n\r\n",
        &mut got,
    );
    assert!(h1.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(b1 == pattern(5000));
    let (h2, b2) = request(
        &mut p,
        id,
        b"GET /stats HTTP/1.1\r\nHost: tcpd\r\n\r\n",
        &mut got,
    );
    assert!(h2.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(!h2.contains("Connection: close"));
    let json = String::from_utf8(b2).unwrap();
    assert!(json.starts_with('{') && json.ends_with("}\n"), "{json}");
    // Still one connection, still open: the second request reused it.
    assert_eq!(p.host.accepted(), 1);
    assert_eq!(p.host.connection_count(), 1);
    // Then close it from the client: the server follows.
    p.client.close(id).unwrap();
    p.drive_until("the server to close", |p| p.host.connection_count() == 0);
}

#[test]
fn replays_are_deterministic() {
    // Same inputs, same times: the same bytes on the wire.
    fn trace() -> Vec<u8> {
        let mut p = Pair::new();
        let id = p.connect(HTTP);
        p.drive_until("connection", |p| p.take_event(Event::Connected(id)));
        let mut got = Vec::new();
        let (_, body) = request(
            &mut p,
            id,
            b"GET /bytes/30000 HTTP/1.1\r\nHost: t\r\n\r\n",
            &mut got,
        );
        let mut all = body;
        let echo = upload_and_collect(&mut p, ECHO, &payload(50_000));
        all.extend_from_slice(&echo);
        all.extend_from_slice(&p.now.as_micros().to_le_bytes());
        all.extend_from_slice(&p.server.stats().packets_out.to_le_bytes());
        all
    }
    assert_eq!(trace(), trace());
}

#[test]
fn echo_backpressure_with_a_client_that_does_not_read() {
    let mut p = Pair::new();
    let data = payload(4 << 20);
    let id = p.connect(ECHO);
    p.drive_until("connection", |p| p.take_event(Event::Connected(id)));
    // The client writes as fast as it can and reads nothing for 2 s.
    let mut sent = 0;
    let until = p.now + Duration::from_secs(2);
    while p.now < until {
        if sent < data.len() {
            sent += p.client.send(id, &data[sent..]).unwrap();
        }
        if !p.step() {
            break;
        }
    }
    // Everything in between is full: client send buffer, server receive
    // buffer (held by the stalled echo), server send buffer, client receive
    // buffer. Nothing grew beyond its limit: a receive buffer grows only
    // with what its application read (dynamic right-sizing; the client
    // reads nothing, the echo stops reading once its send buffer is full),
    // and a send buffer to at most twice the largest window its peer
    // offered (conn/autotune.rs, `tcp_sndbuf_expand`).
    let cfg = tcp::Config::default();
    let ceiling = cfg.recv_buffer * 2 + 2 * (2 * cfg.recv_buffer);
    eprintln!("stalled after {sent} bytes (ceiling {ceiling})");
    assert!(sent < data.len(), "the writer must have been stopped");
    assert!(
        sent <= ceiling,
        "sent {sent} with nobody reading (ceiling {ceiling})"
    );
    let server_ids = p.host.connections();
    assert_eq!(server_ids.len(), 1);
    let info = p.server.info(server_ids[0]).unwrap();
    // Each buffer holds no more than its size, and a size grown by
    // auto-tuning (the echo read fast before its send buffer filled) stays
    // within its maximum.
    assert!(info.recv_buffered <= info.recv_buffer, "{info:?}");
    assert!(info.recv_buffer <= cfg.recv_buffer_max, "{info:?}");
    assert!(info.send_buffered <= info.send_buffer, "{info:?}");
    assert!(info.send_buffer <= cfg.send_buffer_max, "{info:?}");
    // Now read: everything comes back, in order.
    let mut got = Vec::new();
    let mut fin_sent = false;
    p.drive_until("the whole echo", |p| {
        if sent < data.len() {
            sent += p.client.send(id, &data[sent..]).unwrap();
        } else if !fin_sent {
            p.client.close(id).unwrap();
            fin_sent = true;
        }
        p.read(id, &mut got)
    });
    assert!(got == data, "echo after a stall must be byte-exact");
}

#[test]
fn http_connection_close_ends_with_fin() {
    let mut p = Pair::new();
    let id = p.connect(HTTP);
    p.drive_until("connection", |p| p.take_event(Event::Connected(id)));
    let req = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_eq!(p.client.send(id, req).unwrap(), req.len());
    let mut got = Vec::new();
    p.drive_until("the server's FIN", |p| p.read(id, &mut got));
    let (head, end) = split_response(&got).unwrap();
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/html"));
    assert!(got[end..].starts_with(b"<!DOCTYPE html>"));
    assert!(got.ends_with(b"</html>\n"));
    p.client.close(id).unwrap();
    p.drive_until("the server to forget the connection", |p| {
        p.host.connection_count() == 0
    });
}

#[test]
fn client_reset_mid_download_drops_the_handler() {
    let mut p = Pair::new();
    let id = p.connect(HTTP);
    p.drive_until("connection", |p| p.take_event(Event::Connected(id)));
    let req = b"GET /bytes/1099511627776 HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_eq!(p.client.send(id, req).unwrap(), req.len());
    let mut got = Vec::new();
    p.drive_until("a megabyte of the download", |p| {
        p.read(id, &mut got);
        got.len() > 1 << 20
    });
    assert_eq!(p.host.connection_count(), 1);
    p.client.abort(id).unwrap();
    p.drive_until("the server to drop the handler", |p| {
        p.host.connection_count() == 0
    });
    assert_eq!(p.server.connection_count(), 0, "no connection left behind");
}

/// Two one-byte writes to echo, the second before the first's echo is
/// acknowledged; returns how long until both came back. With Nagle's
/// algorithm on the server's side, the second echo waits for the client's
/// (delayed, 40 ms) ACK of the first.
fn second_small_echo_time(host_config: InlineConfig) -> Duration {
    let mut p = Pair::with_host(host_config);
    let id = p.connect(ECHO);
    p.drive_until("connection", |p| p.take_event(Event::Connected(id)));
    // The client must not hold its own second byte back.
    p.client.set_nodelay(id, true).unwrap();
    let start = p.now;
    assert_eq!(p.client.send(id, b"a").unwrap(), 1);
    p.step();
    // 10 µs later, while "a" is still on its way (50 µs latency).
    p.now += Duration::from_micros(10);
    assert_eq!(p.client.send(id, b"b").unwrap(), 1);
    let mut got = Vec::new();
    p.drive_until("both echoes", |p| {
        p.read(id, &mut got);
        got.len() >= 2
    });
    assert_eq!(got, b"ab");
    p.now.saturating_since(start)
}

/// `--workers 0` serves connections through the InlineHost; like the
/// reactor does for worker-hosted ones, the host turns Nagle off on what it
/// accepts (`Config::nodelay`), so an echo is never held for an ACK.
#[test]
fn inline_connections_get_nodelay_like_worker_hosted_ones() {
    let fast = second_small_echo_time(InlineConfig::default());
    assert!(
        fast < Duration::from_millis(5),
        "with nodelay the second echo is sent at once, took {fast:?}"
    );
    let slow = second_small_echo_time(InlineConfig {
        nodelay: false,
        ..InlineConfig::default()
    });
    assert!(
        slow >= Duration::from_millis(30),
        "with Nagle the second echo waits for the client's delayed ACK, took {slow:?}"
    );
}

/// Wall-clock cost of the inline host with the real TCP on both sides (no
/// device): `cargo test --release -p daemon --test inline -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run by hand in release mode"]
fn throughput_inline() {
    let n = 200usize << 20;
    let mut p = Pair::new();
    p.latency = Duration::from_micros(20);
    let id = p.connect(HTTP);
    p.drive_until("connection", |p| p.take_event(Event::Connected(id)));
    let req = format!("GET /bytes/{n} HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(p.client.send(id, req.as_bytes()).unwrap(), req.len());
    let t = std::time::Instant::now();
    let mut total = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    let mut head = None;
    let mut ok = true;
    p.drive_until("the whole download", |p| {
        loop {
            match p.client.recv(id, &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    let mut data = &chunk[..k];
                    if head.is_none() {
                        let end = data.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        head = Some(end);
                        data = &data[end..];
                    }
                    for (i, b) in data.iter().enumerate() {
                        ok &= *b == ((total + i) % 251) as u8;
                    }
                    total += data.len();
                }
            }
        }
        total >= n
    });
    let secs = t.elapsed().as_secs_f64();
    assert!(ok, "pattern intact");
    assert_eq!(total, n);
    eprintln!(
        "download /bytes/{n} through two endpoints + inline host: {:.2} s wall, {:.0} MB/s (both stacks on one thread), virtual {:?}",
        secs,
        n as f64 / secs / 1e6,
        p.now
    );
}
