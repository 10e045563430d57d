//! Fault injection for tests: make the next write fail, fail half-way, or make fsync fail,
//! as a full or failing disk would.

use std::fmt;
use std::sync::Arc;

/// What the writer does with its next write.
pub enum WriteFault {
    Proceed,
    /// Fail before writing anything.
    Fail(std::io::Error),
    /// Write the first `n` bytes, then fail (a torn write).
    Partial(usize, std::io::Error),
}

/// Decides the fate of the store's writes and fsyncs. Used only by tests.
pub trait FaultInjector: Send + Sync {
    fn on_write(&self, len: usize) -> WriteFault;
    fn on_sync(&self) -> std::io::Result<()>;
}

/// A fault injector handed to the store through [`crate::Options`].
#[derive(Clone)]
pub struct FaultHook(pub Arc<dyn FaultInjector>);

impl fmt::Debug for FaultHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FaultHook")
    }
}

/// The OS error a full disk returns.
pub fn enospc() -> std::io::Error {
    std::io::Error::from_raw_os_error(28)
}
