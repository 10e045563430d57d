//! Segments as readers see them: the active segment (an in-memory index over a file still
//! being appended to) and sealed segments (immutable files read through mmap, with an index
//! file loaded on first use).
//!
//! - `active.rs`: the segment appended to, read through its in-memory index.
//! - `sealed.rs`: a sealed segment before it is loaded: what `Stats` and bounded counts learn
//!   from the first page of its index, and loading (with the rebuild of a missing index).
//! - `loaded.rs`: a loaded sealed segment: its blocks and its index sections.
//! - `checkpoint.rs`: the active segment's index saved in parts as it grows, loaded at open
//!   so recovery scans only the blocks after it.
//! - `index.rs`: a sealed index's checks (the first pages at load, each other section on
//!   first read) and its rebuild from the segment.

mod active;
pub(crate) mod checkpoint;
mod index;
mod loaded;
mod sealed;

pub use active::ActiveSegment;
pub use loaded::LoadedSegment;
pub use sealed::{SealedSegment, SharedError};
