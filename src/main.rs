//! tcpd: a user-space TCP/IP stack and network daemon on a TUN device.
fn main() {}
