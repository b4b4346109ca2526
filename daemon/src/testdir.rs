//! A temporary directory for unit tests, removed on drop (also when the
//! test fails).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// `$TMPDIR/tcpd-<tag>-<pid>-<n>`, made afresh; removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// Creates the directory (panics if it cannot: a test failure).
    #[allow(clippy::unwrap_used)]
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "tcpd-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
