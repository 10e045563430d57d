//! Hooks through which a server observes the engine's I/O (for metrics), without the engine
//! depending on any metrics library.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Called by the engine as work happens. Implementations must be cheap and never block: they
/// run inside the commit path.
pub trait Observer: Send + Sync + 'static {
    /// One fdatasync (of any file) took `elapsed`.
    fn fsync(&self, elapsed: Duration);
    /// One group commit wrote `records` records, `bytes` bytes on disk, from `batches` batches.
    fn commit(&self, batches: usize, records: u64, bytes: u64);
}

/// An observer handed to the store through [`crate::Options::observer`].
#[derive(Clone)]
pub struct ObserverHook(pub Arc<dyn Observer>);

impl fmt::Debug for ObserverHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ObserverHook")
    }
}
