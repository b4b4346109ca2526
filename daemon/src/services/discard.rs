//! The discard service (RFC 863): "simply throw away any data it receives",
//! on TCP until the peer closes, then close our side.

use super::{ConnCtx, Handler, Io, Service};

/// The discard service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl Service for Discard {
    fn name(&self) -> &'static str {
        "discard"
    }
    fn new_handler(&self, _ctx: &ConnCtx) -> Box<dyn Handler> {
        Box::new(DiscardHandler)
    }
}

/// One discard connection.
#[derive(Debug)]
struct DiscardHandler;

impl Handler for DiscardHandler {
    fn on_data(&mut self, data: &[u8], _io: &mut Io<'_>) -> usize {
        // RFC 863: "Any data received is thrown away. No response is sent."
        data.len()
    }
    fn on_writable(&mut self, _io: &mut Io<'_>) {}
    fn on_peer_close(&mut self, io: &mut Io<'_>) {
        // End of stream: close our direction (RFC 9293 §3.10.4).
        io.close();
    }
}
