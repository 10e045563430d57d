//! Replay in seq order from each of the two layouts, on one closed store: the seq-ordered
//! segments, block by block, against the cluster files alone, whose records are in (entity,
//! seq) order. A prototype for the layout decision (docs/decisions.md #26's next step: the
//! cluster files as the only copy past a replay window); the engine does not read this way.
//!
//! A cluster file is replayed in windows of W seqs. Each pass decompresses the blocks that may
//! hold a seq of the window, keeps that window's records in a buffer indexed by seq, then hands
//! them out in order; memory is bounded by W records. Two variants:
//! - `all blocks`: every pass decompresses every block (what today's directory allows, since
//!   it records only each block's first seq);
//! - `seq spans`: a pass skips the blocks whose lowest..highest seq misses the window. The spans
//!   are computed before the clock starts, standing for a per-block column a directory could
//!   store (16 bytes a block).
//!
//! Files are read into memory before timing, so the figures are the CPU of each method (zstd,
//! walking records, copying), not the disk. Every method must hand out the same seqs in the
//! same order (an order-dependent hash over seq and ts is compared).
//!
//! Run: `cargo run --release --example replay_layouts -- DIR [W ...]` (default W: 262144,
//! 1048576, 4194304).

use std::path::Path;
use std::time::Instant;

use echolog::KIND_PURGED;
use echolog_format::block::{decode_block, decompress_body, record_at, record_offsets};
use echolog_format::cluster::{split_cluster_body, ClusterHeader, DirectoryView};
use echolog_format::segment_header::SEGMENT_HEADER_LEN;

type Error = Box<dyn std::error::Error>;

/// Order-dependent hash of a replayed sequence: equal only for the same (seq, ts) in order.
#[derive(Default, PartialEq, Debug, Clone, Copy)]
struct Replayed {
    events: u64,
    hash: u64,
}

impl Replayed {
    fn push(&mut self, seq: u64, ts: i64) {
        self.events += 1;
        self.hash = (self.hash ^ seq ^ (ts as u64).rotate_left(29)).wrapping_mul(0x100_0000_01b3);
    }
}

/// Replays one segment's records in `[from, to)`, block by block.
fn replay_segment(data: &[u8], from: u64, to: u64, out: &mut Replayed) -> Result<(), Error> {
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < data.len() {
        let rest = data.get(pos..).ok_or("segment offset")?;
        let (h, body) = decode_block(rest)?;
        let raw = decompress_body(&h, body)?;
        for (i, off) in record_offsets(&raw, h.count)?.into_iter().enumerate() {
            let seq = h.first_seq + i as u64;
            let r = record_at(&raw, off)?;
            // Readers never return what purge left; cluster files do not hold it.
            if (from..to).contains(&seq) && r.kind != KIND_PURGED {
                out.push(seq, r.ts);
            }
        }
        pos += h.total_len() as usize;
    }
    Ok(())
}

/// One block of a cluster file: where it is, and its lowest and highest seq.
struct Block {
    at: usize,
    count: u32,
    seq_min: u64,
    seq_max: u64,
}

fn cluster_blocks(data: &[u8]) -> Result<(ClusterHeader, Vec<Block>), Error> {
    let head = data.get(..64).ok_or("cluster header")?;
    let h = ClusterHeader::decode(head, data.len() as u64)?;
    let dir_bytes = data
        .get(h.directory_offset as usize..)
        .ok_or("cluster directory")?;
    let dir = DirectoryView::parse(dir_bytes, &h)?;
    let mut blocks = Vec::new();
    for i in 0..dir.block_count() {
        let b = dir.block(i).ok_or("block table")?;
        let at = b.offset as usize;
        let (bh, body) = decode_block(data.get(at..).ok_or("block offset")?)?;
        let raw = decompress_body(&bh, body)?;
        let (seqs, _) = split_cluster_body(&raw, bh.count, bh.first_seq, h.version)?;
        blocks.push(Block {
            at,
            count: bh.count,
            seq_min: seqs.iter().copied().min().unwrap_or(0),
            seq_max: seqs.iter().copied().max().unwrap_or(0),
        });
    }
    Ok((h, blocks))
}

/// Replays a cluster file in windows of `window` seqs; returns the blocks decompressed.
fn replay_cluster(
    data: &[u8],
    h: &ClusterHeader,
    blocks: &[Block],
    window: u64,
    use_spans: bool,
    out: &mut Replayed,
) -> Result<u64, Error> {
    let mut decompressed = 0;
    // Each seq's record (ts only: enough to check the order; a real replay copies the bytes).
    let mut slots: Vec<Option<i64>> = Vec::new();
    let mut from = h.base_seq;
    while from < h.end_seq {
        let to = (from + window).min(h.end_seq);
        slots.clear();
        slots.resize((to - from) as usize, None);
        for b in blocks {
            if use_spans && (b.seq_max < from || b.seq_min >= to) {
                continue;
            }
            decompressed += 1;
            let (bh, body) = decode_block(data.get(b.at..).ok_or("block offset")?)?;
            let raw = decompress_body(&bh, body)?;
            let (seqs, records) = split_cluster_body(&raw, b.count, bh.first_seq, h.version)?;
            let offsets = record_offsets(records, b.count)?;
            for (seq, off) in seqs.into_iter().zip(offsets) {
                if (from..to).contains(&seq) {
                    let slot = slots.get_mut((seq - from) as usize).ok_or("slot")?;
                    *slot = Some(record_at(records, off)?.ts);
                }
            }
        }
        for (i, ts) in slots.iter().enumerate() {
            // A seq the file does not hold is one purge erased (its `$purged` record is in
            // no cluster file).
            if let Some(ts) = ts {
                out.push(from + i as u64, *ts);
            }
        }
        from = to;
    }
    Ok(decompressed)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = Path::new(args.first().ok_or("usage: replay_layouts DIR [W ...]")?);
    let windows: Vec<u64> = if args.len() > 1 {
        args[1..]
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?
    } else {
        vec![1 << 18, 1 << 20, 1 << 22]
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| Ok::<_, Error>(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let read = |n: &String| std::fs::read(dir.join(n));
    let segments: Vec<Vec<u8>> = names
        .iter()
        .filter(|n| n.ends_with(".seg"))
        .map(read)
        .collect::<Result<_, _>>()?;
    let clusters: Vec<Vec<u8>> = names
        .iter()
        .filter(|n| n.ends_with(".clu"))
        .map(read)
        .collect::<Result<_, _>>()?;
    let mut files = Vec::new();
    for c in &clusters {
        let (h, blocks) = cluster_blocks(c)?;
        files.push((c, h, blocks));
    }
    files.sort_by_key(|(_, h, _)| h.base_seq);
    let (from, to) = match (files.first(), files.last()) {
        (Some(f), Some(l)) => (f.1.base_seq, l.1.end_seq),
        _ => return Err("no cluster file: compact the store first".into()),
    };
    let block_count: usize = files.iter().map(|f| f.2.len()).sum();
    println!(
        "seqs {from}..{to}: {} segments, {} cluster files, {block_count} cluster blocks",
        segments.len(),
        files.len()
    );

    let start = Instant::now();
    let mut want = Replayed::default();
    for s in &segments {
        replay_segment(s, from, to, &mut want)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "segments, block by block: {} events in {secs:.2} s = {:.2}M events/s",
        want.events,
        want.events as f64 / secs / 1e6
    );
    for &w in &windows {
        for use_spans in [false, true] {
            let start = Instant::now();
            let mut got = Replayed::default();
            let mut decompressed = 0;
            for (data, h, blocks) in &files {
                decompressed += replay_cluster(data, h, blocks, w, use_spans, &mut got)?;
            }
            let secs = start.elapsed().as_secs_f64();
            if got != want {
                return Err(format!("window {w}: replay differs: {got:?} vs {want:?}").into());
            }
            println!(
                "cluster files, window {w} seqs, {}: {} events in {secs:.2} s = {:.2}M events/s, {:.1} decompressions per block",
                if use_spans { "seq spans" } else { "all blocks" },
                got.events,
                got.events as f64 / secs / 1e6,
                decompressed as f64 / block_count as f64
            );
        }
    }
    Ok(())
}
