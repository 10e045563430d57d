//! Retention: whole sealed segments removed, oldest first, once they are older than the
//! retention age (by the event time of their newest record) or while the store is over the
//! retention bytes.
//!
//! Steps, each safe to be cut short: (1) readers get a view without the segments (removed data
//! is gone for every new reader at once; a reader still holding the old view gets an error if
//! it touches a removed file, never part of it); (2) for each segment, oldest first, its `.seg`
//! then its `.idx` is unlinked; (3) the directory is fsynced. A power loss can undo a suffix
//! of the unlinks: the store then opens with a few more old segments, still a contiguous run
//! of seqs, and the next pass removes them again. An index left without its segment (below
//! the first one) is removed at open.

use std::sync::Arc;

use crate::dir::{index_name, segment_name};
use crate::error::Result;
use crate::store::{Inner, View};
use crate::writer::{now_ms, Writer};

impl Inner {
    /// Applies the retention options; returns how many segments were removed. Runs with the
    /// writer lock held (after a seal, or on request), so no seal races it.
    pub(crate) fn apply_retention(&self, _w: &mut Writer) -> Result<usize> {
        let (age, bytes_max) = (self.opts.retention_age, self.opts.retention_bytes);
        if age.is_none() && bytes_max.is_none() {
            return Ok(0);
        }
        let view = self.view.read().unwrap_or_else(|p| p.into_inner()).clone();
        let size = |p: &std::path::Path| {
            self.storage
                .open(p, false)
                .ok()
                .and_then(|f| f.size_bytes().ok())
                .unwrap_or(0)
        };
        let seg_bytes = |base: u64| {
            size(&self.dir.join(segment_name(base))) + size(&self.dir.join(index_name(base)))
        };
        let mut total: u64 = view
            .sealed
            .iter()
            .map(|s| seg_bytes(s.base_seq))
            .sum::<u64>()
            + view.active.index().len;
        let cutoff = age.map(|a| now_ms().saturating_sub(a.as_millis() as i64));
        let mut remove = 0;
        for seg in view.sealed.iter() {
            let over_bytes = bytes_max.is_some_and(|b| total > b);
            let too_old = match cutoff {
                Some(c) => seg.load()?.header.max_ts < c,
                None => false,
            };
            if !over_bytes && !too_old {
                break;
            }
            total -= seg_bytes(seg.base_seq);
            remove += 1;
        }
        if remove == 0 {
            return Ok(0);
        }
        let _files = self.sealed_files.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut v = self.view.write().unwrap_or_else(|p| p.into_inner());
            *v = Arc::new(View {
                sealed: Arc::new(v.sealed[remove..].to_vec()),
                ..View::clone(&v)
            });
        }
        let gone: Vec<(u64, u64)> = view.sealed[..remove]
            .iter()
            .map(|s| (s.base_seq, s.end_seq))
            .collect();
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .removed(&gone);
        for seg in &view.sealed[..remove] {
            self.storage
                .remove(&self.dir.join(segment_name(seg.base_seq)))?;
            let idx = self.dir.join(index_name(seg.base_seq));
            if let Err(e) = self.storage.remove(&idx) {
                tracing::warn!(file = %idx.display(), error = %e, "could not remove an index of a removed segment; open removes it");
            }
            tracing::info!(
                base_seq = seg.base_seq,
                end_seq = seg.end_seq,
                "retention removed a segment"
            );
        }
        self.storage.sync_dir(&self.dir)?;
        Ok(remove)
    }
}
