//! tcpd's OS side.
pub mod services;
