//! Buffer auto-tuning: a connection's receive and send buffers grow with
//! what the path carries, up to [`Config::recv_buffer_max`] and
//! [`Config::send_buffer_max`], and go back to their defaults
//! ([`Config::recv_buffer`], [`Config::send_buffer`]) once the connection
//! idles.
//!
//! - **Receive side**: dynamic right-sizing as Linux's
//!   `tcp_rcv_space_adjust` / `tcp_rcvbuf_grow` (after Fisk and Feng,
//!   "Dynamic right-sizing in TCP", 2001). Once per receiver-side RTT the
//!   bytes the application consumed are measured; when they exceed the last
//!   measurement the buffer, and with it the window, becomes twice that
//!   (the sender may double its rate in slow start) plus the span of the
//!   out-of-order data held. The receiver's RTT comes from the echoed
//!   timestamps of full-sized data segments (`tcp_rcv_rtt_measure_ts`), or,
//!   without timestamps, from the time one window takes to arrive
//!   (`tcp_rcv_rtt_measure`).
//! - **Send side**: as Linux's `tcp_sndbuf_expand`, the buffer is kept at
//!   twice the congestion window (at least the initial window), so that a
//!   fast recovery, in which the window is halved while a window's worth
//!   of data waits for its ACK, still finds new data queued. It grows only
//!   while the application fills it and the window is not the limit
//!   (`tcp_should_expand_sndbuf`).
//! - **Memory**: neither grows under memory pressure (Linux:
//!   `tcp_under_memory_pressure`), nor the send buffer once the connections
//!   hold half of [`Config::mem_limit`] (`tcp_mem[0]` in
//!   `tcp_should_expand_sndbuf`). The storage itself comes and goes with the
//!   data (the rings give it back to the pool as they drain); what idling
//!   undoes is the ceiling, so that the next burst starts from the default
//!   again, as the congestion window restarts after an idle RTO (RFC 5681
//!   §4.1). Linux keeps a grown `sk_rcvbuf` for the socket's life; the
//!   return to the default is ours.
//!
//! With [`Config::autotune_buffers`] off, both stay at their defaults and
//! the window scale is derived from [`Config::recv_buffer`], as before
//! auto-tuning existed (and as recorded captures without the field ran).

use super::{Conn, Ctx};
use crate::config::Config;
use crate::seq::SeqNum;
use crate::time::{Duration, Instant};

/// Linux's `TCP_INIT_CWND`: the first measurement of the receive rate
/// assumes an initial window's worth per RTT (`tcp_init_buffer_space`).
const INIT_SEGS: u32 = 10;

/// A connection's auto-tuning state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Autotune {
    /// The receive buffer's ceiling now (Linux `sk_rcvbuf`; the window
    /// clamp follows it, as `tcp_rcvbuf_grow` keeps `window_clamp` along).
    pub(crate) rcvbuf: usize,
    /// The send buffer's ceiling now (Linux `sk_sndbuf`).
    pub(crate) sndbuf: usize,
    /// The receiver's RTT estimate in µs, times 8 (Linux `rcv_rtt_est.rtt_us`);
    /// 0 before the first sample.
    rcv_rtt8: u64,
    /// The TSecr of the last timestamp sample (`rcv_rtt_last_tsecr`): one
    /// sample per echoed value.
    last_tsecr: u32,
    /// The per-window measurement: the sequence number that ends the
    /// window advertised when it began, and when it began (`rcv_rtt_est`).
    win_mark: Option<(SeqNum, Instant)>,
    /// Bytes consumed in the last measured RTT (`rcvq_space.space`).
    space: u32,
    /// The consumed sequence number and time the current measurement began
    /// (`rcvq_space.seq`, `rcvq_space.time`); `None` before data came.
    space_start: Option<(SeqNum, Instant)>,
    /// Last time data arrived in order or was consumed.
    rcv_active: Instant,
    /// The application found the send buffer full since the last expansion
    /// check (Linux `SOCK_NOSPACE`).
    pub(crate) snd_full: bool,
}

impl Autotune {
    pub(crate) fn new(cfg: &Config, now: Instant) -> Autotune {
        Autotune {
            rcvbuf: cfg.recv_buffer,
            sndbuf: cfg.send_buffer,
            rcv_rtt8: 0,
            last_tsecr: 0,
            win_mark: None,
            space: 0,
            space_start: None,
            rcv_active: now,
            snd_full: false,
        }
    }

    /// The receiver's RTT estimate, if sampled.
    pub(crate) fn rcv_rtt(&self) -> Option<Duration> {
        (self.rcv_rtt8 > 0).then(|| Duration::from_micros(self.rcv_rtt8 >> 3))
    }

    /// Linux `tcp_rcv_rtt_update`: the estimate follows the least sample
    /// at once; a larger one is smoothed in with gain 1/8, unless it came
    /// from a whole window's time (`win_dep`), which only ever bounds the
    /// RTT from above.
    fn rtt_update(&mut self, sample_us: u64, win_dep: bool) {
        let m = sample_us.max(1) << 3;
        if self.rcv_rtt8 == 0 || m < self.rcv_rtt8 {
            self.rcv_rtt8 = m;
        } else if !win_dep {
            self.rcv_rtt8 = self.rcv_rtt8 - (self.rcv_rtt8 >> 3) + sample_us.max(1);
        }
    }
}

impl Conn {
    /// Idle for longer than the RTO with nothing buffered: the grown
    /// ceilings go back to the defaults (RFC 5681 §4.1's idle criterion).
    fn tune_idle(&self, now: Instant, since: Instant) -> bool {
        now.saturating_since(since) > self.rtt.rto(0)
    }

    /// The receive buffer's ceiling, as it stands at `now`: a connection
    /// that idled with an empty buffer is back at the default.
    pub(crate) fn tuned_rcvbuf(&self, cfg: &Config, now: Instant) -> usize {
        if self.tune.rcvbuf > cfg.recv_buffer
            && self.recv_buf.len() == 0
            && self.ooo.is_empty()
            && self.tune_idle(now, self.tune.rcv_active)
        {
            cfg.recv_buffer
        } else {
            self.tune.rcvbuf
        }
    }

    /// The send buffer's ceiling, as it stands at `now` (see
    /// [`Conn::tuned_rcvbuf`]).
    pub(crate) fn tuned_sndbuf(&self, cfg: &Config, now: Instant) -> usize {
        if self.tune.sndbuf > cfg.send_buffer
            && self.send_buf.len() == 0
            && self.snd_una == self.snd_max
            && self.tune_idle(now, self.last_send_time)
        {
            cfg.send_buffer
        } else {
            self.tune.sndbuf
        }
    }

    /// The receive buffer storage may reach: the ceiling, or the right edge
    /// already advertised, which a ceiling set back after idling must still
    /// honour (RFC 9293 §3.8.6, RFC 7323 §2.4).
    pub(crate) fn rcv_storage_limit(&self) -> usize {
        let edge = if self.rcv_adv > self.rcv_released {
            self.rcv_adv.since(self.rcv_released) as usize
        } else {
            0
        };
        self.tune.rcvbuf.max(edge)
    }

    /// A data segment's `len` bytes from `seq` are about to be placed:
    /// set an idle connection's ceiling back, start the rate measurement,
    /// and take the receiver's RTT samples.
    pub(crate) fn tune_on_data(
        &mut self,
        cx: &mut Ctx<'_>,
        seq: SeqNum,
        len: usize,
        tsecr: Option<u32>,
    ) {
        if !cx.cfg.autotune_buffers || len == 0 {
            return;
        }
        let now = cx.now;
        let rcvbuf = self.tuned_rcvbuf(cx.cfg, now);
        if rcvbuf < self.tune.rcvbuf {
            self.tune.rcvbuf = rcvbuf;
            cx.stats.autotune.buf_idle_shrunk += 1;
            // A new burst: measure its rate from scratch.
            self.tune.space_start = None;
        }
        if self.tune.space_start.is_none() {
            self.tune.space = INIT_SEGS * u32::from(cx.cfg.local_mss(self.local.is_ipv6()));
            self.tune.space_start = Some((self.rcv_released, now));
        }
        // Linux tcp_rcv_rtt_measure_ts: one sample per new TSecr, from a
        // full-sized segment (a short one may have waited for the
        // application); a 0 ms difference counts as 1 ms.
        if let Some(ecr) = tsecr {
            if ecr != 0 && ecr != self.tune.last_tsecr && len >= usize::from(self.mss) {
                self.tune.last_tsecr = ecr;
                let ms = self.ts_now(now).wrapping_sub(ecr);
                if (ms as i32) >= 0 && ms < 600_000 {
                    self.tune.rtt_update(u64::from(ms.max(1)) * 1000, false);
                }
            }
        }
        if seq == self.rcv_nxt {
            self.tune.rcv_active = now;
            let end = seq + len as u32;
            // Linux tcp_rcv_rtt_measure: the time from advertising a window
            // to receiving its last byte is at least one RTT.
            match self.tune.win_mark {
                Some((mark, t)) if end >= mark => {
                    self.tune
                        .rtt_update(now.saturating_since(t).as_micros(), true);
                    self.tune.win_mark = None;
                }
                Some(_) => {}
                None => {}
            }
            if self.tune.win_mark.is_none() {
                self.tune.win_mark = Some((end + self.advertised_window(), now));
            }
        }
    }

    /// The application consumed data (RCV.USER moved): once per
    /// receiver RTT, dynamic right-sizing (Linux `tcp_rcv_space_adjust`,
    /// `tcp_rcvbuf_grow`).
    pub(crate) fn tune_on_consumed(&mut self, cx: &mut Ctx<'_>) {
        if !cx.cfg.autotune_buffers {
            return;
        }
        let now = cx.now;
        self.tune.rcv_active = now;
        let Some((seq, t)) = self.tune.space_start else {
            return;
        };
        let Some(rtt) = self.tune.rcv_rtt() else {
            return;
        };
        if now.saturating_since(t) < rtt {
            return;
        }
        let copied = self.rcv_released.since(seq);
        if copied > self.tune.space {
            self.tune.space = copied;
            // tcp_rcvbuf_grow: "slow start: allow the sender to double its
            // rate", plus the out-of-order data held above RCV.NXT.
            let ooo = self.ooo.highest().map_or(0, |h| h.since(self.rcv_nxt));
            let want = (2 * u64::from(copied) + u64::from(ooo)) as usize;
            // The window field caps what a larger buffer could offer
            // (RFC 7323 §2.3).
            let field_max = 65535usize << self.opt.rcv_wscale;
            let target = want.min(cx.cfg.recv_buffer_ceiling()).min(field_max);
            if target > self.tune.rcvbuf {
                if cx.pool.under_pressure() {
                    cx.stats.autotune.buf_grow_held += 1;
                } else {
                    self.tune.rcvbuf = target;
                    cx.stats.autotune.rcvbuf_grown += 1;
                }
            }
        }
        self.tune.space_start = Some((self.rcv_released, now));
    }

    /// The application queues data: an idle send side starts again from
    /// the default ceiling.
    pub(crate) fn tune_on_send(&mut self, cx: &mut Ctx<'_>) {
        if !cx.cfg.autotune_buffers {
            return;
        }
        let sndbuf = self.tuned_sndbuf(cx.cfg, cx.now);
        if sndbuf < self.tune.sndbuf {
            self.tune.sndbuf = sndbuf;
            cx.stats.autotune.buf_idle_shrunk += 1;
        }
    }

    /// An ACK freed send buffer space: Linux `tcp_new_space` →
    /// `tcp_sndbuf_expand`, when `tcp_should_expand_sndbuf` allows: the
    /// application is waiting for space, the congestion window is not
    /// full, and memory is not short.
    pub(crate) fn tune_on_ack(&mut self, cx: &mut Ctx<'_>) {
        if !cx.cfg.autotune_buffers || !self.tune.snd_full {
            return;
        }
        let cwnd = self.cwnd();
        if self.in_flight() >= cwnd {
            // Window-limited: a larger buffer would not send more; wait
            // for the window to grow.
            return;
        }
        self.tune.snd_full = false;
        let mss = u32::from(self.mss);
        // 2 × max(cwnd, the initial window) of payload: tcpd's ring holds
        // payload only, so Linux's per-segment overhead (skb truesize) has
        // no analogue. Linux also counts `reordering + 1` segments; tcpd's
        // reordering degree is the fixed DupThresh 3, below the initial
        // window. Unlike Linux, the window is also capped by the largest
        // the peer offered: tcpd's cwnd keeps growing while the peer's
        // window is the limit (no `tcp_is_cwnd_limited`, RFC 7661), and a
        // slow reader must not make the sender queue megabytes.
        let wnd = cwnd.min(self.max_snd_wnd);
        let segs = u64::from(wnd.max(INIT_SEGS * mss));
        let target = ((2 * segs) as usize).min(cx.cfg.send_buffer_ceiling());
        if target <= self.tune.sndbuf {
            return;
        }
        if cx.pool.under_pressure() || cx.pool.held_bytes() >= cx.cfg.mem_limit / 2 {
            cx.stats.autotune.buf_grow_held += 1;
            return;
        }
        self.tune.sndbuf = target;
        cx.stats.autotune.sndbuf_grown += 1;
    }
}
