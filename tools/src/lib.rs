//! Helpers for tcpd developers.
