//! echolog: a segmented, zstd-compressed, append-only event store.
//!
//! The engine is synchronous: [`Store`] is `Send + Sync` and cheap to clone; appends from many
//! threads share one write and one fdatasync (group commit). See `docs/architecture.md` for how
//! an append and a read flow through the modules.

mod backup;
mod block_cache;
mod cluster;
pub mod compaction;
pub mod count;
mod cursors;
mod dir;
mod error;
mod event;
mod history;
mod id_filter;
mod key_map;
mod mem_index;
pub mod observe;
mod options;
mod purge;
mod read_ahead;
mod retention;
mod scan;
mod segment;
pub mod storage;
mod store;
mod tombstones;
mod verify;
mod writer;

pub use backup::BackupReport;
pub use count::{Bucket, BucketCount, CountQuery, CountResult};
pub use cursors::CURSORS_FILE;
pub use echolog_format::FormatError;
pub use error::{Error, Result};
pub use event::{Event, EventRef, StoredEvent, RESERVED_KIND_PREFIX};
pub use history::EventSink;
pub use id_filter::persist::ID_FILTER_FILE;
pub use options::{Options, SyncPolicy};
pub use purge::{PurgeReport, PURGE_PASS_INTERVAL};
pub use segment::SharedError;
pub use store::{HistoryQuery, OpenReport, ReadPage, Stats, Store};
pub use tombstones::{
    KIND_DELETE, KIND_DELETE_SEQS, KIND_PURGED, KIND_RESTORE, REASON_TAG_PREFIX, TOMBSTONES_FILE,
};
pub use verify::{verify, Problem, VerifyReport};
pub use writer::AppendOutcome;
