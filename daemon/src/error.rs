//! The daemon's error: one line for the user, saying what went wrong and,
//! where possible, how to fix it.

use std::fmt;

/// An error that ends the daemon. Its `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with `msg` (one line).
    pub fn new(msg: impl Into<String>) -> Error {
        let mut s: String = msg.into();
        if let Some(i) = s.find('\n') {
            s.truncate(i);
        }
        Error(s)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}
