use std::str::FromStr;
use std::time::Duration;

use crate::error::Error;

/// When appended data is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fdatasync before every acknowledgement (group commit shares one fsync). The default:
    /// an acknowledged event survives power loss.
    Always,
    /// fdatasync at most every interval (on the next append or by a background flusher): a
    /// crash of the machine may lose up to that much acknowledged data. A process crash loses
    /// nothing, the OS still has the pages.
    Interval(Duration),
    /// Never fdatasync (the OS writes back when it likes): tests and bulk loads only.
    Never,
}

impl FromStr for SyncPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "always" => Ok(SyncPolicy::Always),
            "never" => Ok(SyncPolicy::Never),
            _ => {
                let ms = s
                    .strip_prefix("interval:")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|ms| *ms > 0 && *ms <= 60_000)
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "sync: {s:?} is not one of always, never, interval:<ms> (1..=60000)"
                        ))
                    })?;
                Ok(SyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

/// Store configuration. `Options::default()` is the production default.
#[derive(Debug, Clone)]
pub struct Options {
    pub sync: SyncPolicy,
    /// A segment is sealed once it reaches this size.
    pub segment_size_bytes_max: u64,
    /// Closing the store seals the active segment when it holds at least this many bytes, so
    /// the next open has no index to rebuild from it (the rebuild of a full 32 MiB one took 1.0-1.6 s at 100M events).
    /// A smaller active segment is left for the next open to rebuild, which keeps frequent
    /// short-lived opens (the CLI, tests) from leaving a trail of tiny segments. `None`:
    /// never seal at close.
    pub seal_at_close_bytes_min: Option<u64>,
    /// The commit thread saves the active segment's index in a checkpoint file each time the
    /// durable segment has grown by this many bytes, so that open after a crash loads it
    /// and decodes only the blocks after it. `None`: no checkpoints (open after a crash then
    /// decodes the whole active segment: 1.0-1.6 s for a full 32 MiB one). With sync=never
    /// the segment is fdatasynced before each checkpoint, since a checkpoint may only cover
    /// durable bytes.
    pub checkpoint_bytes: Option<u64>,
    /// Target decompressed size of one block; a block is cut at the first record boundary
    /// past it. Smaller blocks make history reads cheaper, larger ones compress better.
    pub block_raw_bytes_target: usize,
    /// zstd level for block bodies (1 is fast and compresses JSON ~4-5x).
    pub zstd_level: i32,
    /// Bytes of decompressed blocks kept in memory.
    pub block_cache_bytes_max: u64,
    /// Payload size limit (default 1 MiB).
    pub payload_bytes_max: usize,
    /// Events in one append batch.
    pub batch_events_max: usize,
    /// Encoded bytes of one append batch.
    pub batch_bytes_max: usize,
    /// How far back an idempotency id is recognised, in events: an append whose id was stored
    /// among the last this many records returns the original seq; an older one is stored
    /// again. 0 (the default) is the whole store. A bound keeps the id lookup of an append
    /// from probing every sealed segment of a store that grows for years.
    pub idempotency_window_events: u64,
    /// Remove whole sealed segments whose newest event is older than this (by event time).
    pub retention_age: Option<std::time::Duration>,
    /// Remove the oldest sealed segments while segments and indexes take more bytes than this.
    pub retention_bytes: Option<u64>,
    /// `count` planner: below this many matching events per minute bucket of a segment, read
    /// timestamps instead of intersecting minute bitmaps. Both are exact; tests set 0 to force
    /// the bitmap path.
    #[doc(hidden)]
    pub count_events_per_minute_bitmap: u64,
    /// `count` planner: answer one-tag counts over whole hours from the per-tag hourly counts
    /// of sealed segments (index section 9). Both paths are exact; benchmarks set false to
    /// time the bitmap path on the same store.
    #[doc(hidden)]
    pub count_tag_hours: bool,
    /// Where files live: `None` is the operating system's file system. Tests put a
    /// [`crate::storage::sim::SimDisk`] here to fail calls or simulate a power loss.
    pub backend: Option<crate::storage::Backend>,
    /// Told of every fdatasync and group commit (a server's metrics).
    pub observer: Option<crate::observe::ObserverHook>,
    /// Rewrite sealed segments into entity-clustered files in the background (history reads
    /// then cost in proportion to the entity's events). Off, history reads the segments.
    pub compaction: bool,
    /// Adjacent cluster files of one level merged into one of the next.
    pub compaction_fanout: u32,
    /// Levels above 0 that merges build; files of the top level are not merged further.
    pub compaction_level_max: u32,
    /// Bound on compaction's write rate; 0 is unbounded.
    pub compaction_bytes_per_second_max: u64,
    /// Target decompressed size of one cluster block (seq column and records).
    pub cluster_block_raw_bytes_target: usize,
    /// Erase deleted events once their tombstone is older than this (checked every
    /// [`crate::PURGE_PASS_INTERVAL`] in the background). None (the default): never; deleted
    /// events stay readable with `include_deleted` until retention removes them.
    pub purge_grace: Option<std::time::Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncPolicy::Always,
            segment_size_bytes_max: 32 * 1024 * 1024,
            seal_at_close_bytes_min: Some(2 * 1024 * 1024),
            checkpoint_bytes: Some(CHECKPOINT_BYTES_DEFAULT),
            block_raw_bytes_target: 64 * 1024,
            zstd_level: 1,
            block_cache_bytes_max: 256 * 1024 * 1024,
            payload_bytes_max: 1024 * 1024,
            batch_events_max: 100_000,
            batch_bytes_max: 16 * 1024 * 1024,
            idempotency_window_events: 0,
            retention_age: None,
            retention_bytes: None,
            count_events_per_minute_bitmap: 64,
            count_tag_hours: true,
            backend: None,
            observer: None,
            compaction: true,
            compaction_fanout: 4,
            compaction_level_max: 4,
            compaction_bytes_per_second_max: 128 * 1024 * 1024,
            cluster_block_raw_bytes_target: 16 * 1024,
            purge_grace: None,
        }
    }
}

/// Default of [`Options::checkpoint_bytes`].
pub const CHECKPOINT_BYTES_DEFAULT: u64 = 4 * 1024 * 1024;
/// Smallest `checkpoint_bytes` (tests use small stores; a store with parts this small spends
/// more on them than a scan of the tail would cost).
pub const CHECKPOINT_BYTES_MIN: u64 = 1024;

/// Limits on options themselves, so a typo cannot make a store unusable.
pub const SEGMENT_SIZE_BYTES_MIN: u64 = 4096;
pub const SEGMENT_SIZE_BYTES_LIMIT: u64 = 1 << 30;
pub const BATCH_EVENTS_LIMIT: usize = 1_000_000;
pub const BATCH_BYTES_LIMIT: usize = 1 << 30;
pub const COMPACTION_FANOUT_LIMIT: u32 = 64;
pub const COMPACTION_LEVEL_LIMIT: u32 = 16;

impl Options {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        use echolog_format::limits::{BLOCK_RAW_BYTES_MAX, PAYLOAD_BYTES_MAX};
        if !(SEGMENT_SIZE_BYTES_MIN..=SEGMENT_SIZE_BYTES_LIMIT)
            .contains(&self.segment_size_bytes_max)
        {
            return Err(Error::invalid(format!(
                "segment_size_bytes_max: {} is outside {SEGMENT_SIZE_BYTES_MIN}..={SEGMENT_SIZE_BYTES_LIMIT}",
                self.segment_size_bytes_max
            )));
        }
        if let Some(b) = self.checkpoint_bytes {
            if !(CHECKPOINT_BYTES_MIN..=SEGMENT_SIZE_BYTES_LIMIT).contains(&b) {
                return Err(Error::invalid(format!(
                    "checkpoint_bytes: {b} is outside {CHECKPOINT_BYTES_MIN}..={SEGMENT_SIZE_BYTES_LIMIT}"
                )));
            }
        }
        // A block is cut after the record that crosses the target, so the target plus one
        // largest record (payload plus at most ~9 KiB of other fields) must fit in a block.
        let target_max = BLOCK_RAW_BYTES_MAX / 2 - 64 * 1024;
        if self.block_raw_bytes_target == 0 || self.block_raw_bytes_target > target_max {
            return Err(Error::invalid(format!(
                "block_raw_bytes_target: must be 1..={target_max}"
            )));
        }
        if self.payload_bytes_max > PAYLOAD_BYTES_MAX {
            return Err(Error::invalid(format!(
                "payload_bytes_max: {} exceeds the format's limit {PAYLOAD_BYTES_MAX}",
                self.payload_bytes_max
            )));
        }
        // One batch must fit in blocks of at most BLOCK_RAW_BYTES_MAX, and a single record
        // always fits: payload <= 16 MiB plus fields < 32 MiB.
        if !(1..=BATCH_EVENTS_LIMIT).contains(&self.batch_events_max) {
            return Err(Error::invalid(format!(
                "batch_events_max: must be 1..={BATCH_EVENTS_LIMIT}, got {}",
                self.batch_events_max
            )));
        }
        if !(1..=BATCH_BYTES_LIMIT).contains(&self.batch_bytes_max) {
            return Err(Error::invalid(format!(
                "batch_bytes_max: must be 1..={BATCH_BYTES_LIMIT}, got {}",
                self.batch_bytes_max
            )));
        }
        if !(-7..=22).contains(&self.zstd_level) {
            return Err(Error::invalid("zstd_level: must be -7..=22"));
        }
        if !(2..=COMPACTION_FANOUT_LIMIT).contains(&self.compaction_fanout) {
            return Err(Error::invalid(format!(
                "compaction_fanout: must be 2..={COMPACTION_FANOUT_LIMIT}, got {}",
                self.compaction_fanout
            )));
        }
        if self.compaction_level_max > COMPACTION_LEVEL_LIMIT {
            return Err(Error::invalid(format!(
                "compaction_level_max: must be 0..={COMPACTION_LEVEL_LIMIT}, got {}",
                self.compaction_level_max
            )));
        }
        if self.cluster_block_raw_bytes_target == 0
            || self.cluster_block_raw_bytes_target > target_max
        {
            return Err(Error::invalid(format!(
                "cluster_block_raw_bytes_target: must be 1..={target_max}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_options_are_refused_naming_the_option() {
        assert!(Options::default().validate().is_ok());
        type Mutation = Box<dyn Fn(&mut Options)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "segment_size_bytes_max",
                Box::new(|o| o.segment_size_bytes_max = 100),
            ),
            (
                "segment_size_bytes_max",
                Box::new(|o| o.segment_size_bytes_max = 2 << 30),
            ),
            (
                "checkpoint_bytes",
                Box::new(|o| o.checkpoint_bytes = Some(100)),
            ),
            (
                "block_raw_bytes_target",
                Box::new(|o| o.block_raw_bytes_target = 0),
            ),
            (
                "block_raw_bytes_target",
                Box::new(|o| o.block_raw_bytes_target = 32 << 20),
            ),
            (
                "payload_bytes_max",
                Box::new(|o| o.payload_bytes_max = 17 << 20),
            ),
            ("batch_events_max", Box::new(|o| o.batch_events_max = 0)),
            (
                "batch_events_max",
                Box::new(|o| o.batch_events_max = 2_000_000),
            ),
            ("batch_bytes_max", Box::new(|o| o.batch_bytes_max = 0)),
            ("zstd_level", Box::new(|o| o.zstd_level = 99)),
        ];
        for (field, f) in cases {
            let mut o = Options::default();
            f(&mut o);
            let msg = o.validate().unwrap_err().to_string();
            assert!(msg.contains(field), "{field}: {msg}");
        }
    }

    #[test]
    fn sync_policy_parses_and_rejects_garbage() {
        assert_eq!("always".parse::<SyncPolicy>().unwrap(), SyncPolicy::Always);
        assert_eq!("never".parse::<SyncPolicy>().unwrap(), SyncPolicy::Never);
        assert_eq!(
            "interval:50".parse::<SyncPolicy>().unwrap(),
            SyncPolicy::Interval(Duration::from_millis(50))
        );
        for bad in ["", "interval:", "interval:0", "interval:x", "sometimes"] {
            let e = bad.parse::<SyncPolicy>().unwrap_err().to_string();
            assert!(e.contains("sync"), "{e}");
        }
    }
}
