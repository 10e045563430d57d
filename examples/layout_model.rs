//! A model of cluster-file layouts for the single-copy question (docs/decisions.md #38): how
//! many block decompressions a replay in windows of W seqs costs, and how many blocks an
//! entity's history touches, when a file's records are all in (entity, seq) order (what
//! compaction writes) or when the records of entities with at most K records in the file are
//! kept in seq order in a section of their own ("rare in seq order").
//!
//! No store is read or written and nothing is compressed: the seed workload's entity of each
//! seq is computed (`benches/workload`), a file of S seqs is laid out in memory as a list of
//! seqs, and blocks are cut every `records_per_block` records (83: what compaction's 16 KiB
//! blocks hold of the seed workload, 100M events in 1,199,470 blocks at 100M;
//! `LAYOUT_BLOCK_RECORDS=N` sets another). A block's
//! cost in a replay is the number of windows its lowest..highest seq meets (a per-block seq
//! span column is assumed); a history's cost is the number of distinct blocks holding the
//! entity's records. Every layout is checked to hold every seq of the file exactly once.
//!
//! Run: `cargo run --release --example layout_model -- [N] [S] [K ...]`
//! (defaults: N = 100M, S = N, K = 0 (all clustered), 1, 2, 4, 8).

#[path = "../benches/workload/mod.rs"]
#[allow(dead_code)]
mod workload;

use std::time::Instant;

/// Records a block holds in the model, unless `LAYOUT_BLOCK_RECORDS` says otherwise.
const RECORDS_PER_BLOCK: usize = 83;

fn records_per_block() -> usize {
    std::env::var("LAYOUT_BLOCK_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(RECORDS_PER_BLOCK)
}
/// Replay windows, in seqs, the model prices.
const WINDOWS: [u64; 3] = [262_144, 1_048_576, 8_388_608];

/// One block of the model: its lowest and highest seq.
#[derive(Clone, Copy)]
struct Block {
    lo: u32,
    hi: u32,
}

/// A file laid out: its seqs in file order and the blocks cutting them, every
/// `block_records` seqs.
struct Layout {
    seqs: Vec<u32>,
    block_records: usize,
    blocks: Vec<Block>,
}

fn cut(seqs: Vec<u32>, block_records: usize) -> Layout {
    let blocks = seqs
        .chunks(block_records)
        .map(|c| Block {
            lo: c.iter().copied().min().unwrap_or(0),
            hi: c.iter().copied().max().unwrap_or(0),
        })
        .collect();
    Layout {
        seqs,
        block_records,
        blocks,
    }
}

/// Seqs `from..from + s` in (entity, seq) order, except those of entities with at most `k`
/// records in the file, which go first, in seq order.
fn layout(entities: &[u32], from: usize, s: usize, k: u32, block_records: usize) -> Layout {
    let file = &entities[from..from + s];
    let mut count = vec![0u32; workload::ENTITIES as usize];
    for &e in file {
        count[e as usize] += 1;
    }
    let rare = |e: u32| count[e as usize] <= k;
    let present: Vec<u32> = count.iter().copied().filter(|&c| c > 0).collect();
    println!(
        "K={k}: {} entities in the file, the rarest with {} records; {} with at most K, holding {} records",
        present.len(),
        present.iter().min().unwrap_or(&0),
        present.iter().filter(|&&c| c <= k).count(),
        present.iter().filter(|&&c| c <= k).map(|&c| u64::from(c)).sum::<u64>(),
    );
    let mut seqs: Vec<u32> = Vec::with_capacity(s);
    seqs.extend(
        file.iter()
            .enumerate()
            .filter(|(_, &e)| rare(e))
            .map(|(i, _)| (from + i) as u32),
    );
    // A counting sort by entity keeps each entity's seqs ascending.
    let mut start = vec![0usize; workload::ENTITIES as usize + 1];
    for (e, &c) in count.iter().enumerate() {
        let c = if rare(e as u32) { 0 } else { c as usize };
        start[e + 1] = start[e] + c;
    }
    let base = seqs.len();
    seqs.resize(base + start[workload::ENTITIES as usize], 0);
    let mut next = start;
    for (i, &e) in file.iter().enumerate() {
        if !rare(e) {
            seqs[base + next[e as usize]] = (from + i) as u32;
            next[e as usize] += 1;
        }
    }
    assert_eq!(seqs.len(), s, "every seq of the file is laid out once");
    cut(seqs, block_records)
}

/// Decompressions per block of a replay in windows of `w` seqs.
fn replay_cost(l: &Layout, w: u64) -> f64 {
    let total: u64 = l
        .blocks
        .iter()
        .map(|b| u64::from(b.hi) / w - u64::from(b.lo) / w + 1)
        .sum();
    total as f64 / l.blocks.len() as f64
}

/// Distinct blocks holding each listed entity's records, per entity, sorted.
fn history_blocks(l: &Layout, entities: &[u32], wanted: &[u32]) -> Vec<usize> {
    let mut seen = vec![u32::MAX; workload::ENTITIES as usize];
    let mut blocks = vec![0usize; workload::ENTITIES as usize];
    for (b, chunk) in l.seqs.chunks(l.block_records).enumerate() {
        for &s in chunk {
            let e = entities[s as usize] as usize;
            if seen[e] != b as u32 {
                seen[e] = b as u32;
                blocks[e] += 1;
            }
        }
    }
    let mut out: Vec<usize> = wanted.iter().map(|&e| blocks[e as usize]).collect();
    out.sort_unstable();
    out
}

fn pct(sorted: &[usize], p: f64) -> usize {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let n = args.first().copied().unwrap_or(100_000_000) as usize;
    let s = args.get(1).copied().unwrap_or(n as u64) as usize;
    let ks: Vec<u32> = match args.get(2..) {
        Some(k) if !k.is_empty() => k.iter().map(|&k| k as u32).collect(),
        _ => vec![0, 1, 2, 4, 8],
    };
    assert!(
        s > 0 && s <= n && n <= u32::MAX as usize,
        "need 0 < S <= N < 2^32"
    );
    let block_records = records_per_block();
    let t = Instant::now();
    let entities: Vec<u32> = (0..n as u64)
        .map(|i| workload::entity_of(workload::mix(i)) as u32)
        .collect();
    println!(
        "{n} events, files of {s} seqs, {} records a block ({:.1} s to draw)",
        block_records,
        t.elapsed().as_secs_f64()
    );
    // The benches' query lists, as entity numbers.
    let lists = workload::lists();
    let numbers = |l: &[String]| -> Vec<u32> {
        l.iter()
            .map(|e| {
                e.strip_prefix("product:")
                    .and_then(|n| n.parse().ok())
                    .expect("a product entity")
            })
            .collect()
    };
    let (random, busy) = (numbers(&lists.random), numbers(&lists.busy_newest));
    for k in ks {
        let l = layout(&entities, 0, s, k, block_records);
        let costs: Vec<String> = WINDOWS
            .iter()
            .map(|&w| format!("W={}k {:.2}", w >> 10, replay_cost(&l, w)))
            .collect();
        let r = history_blocks(&l, &entities, &random);
        let b = history_blocks(&l, &entities, &busy);
        println!(
            "K={k}: {} blocks; replay decompressions per block: {}; blocks per history in the file: random product p50 {} p99 {} max {}, busy p50 {} p99 {}",
            l.blocks.len(),
            costs.join(", "),
            pct(&r, 0.5),
            pct(&r, 0.99),
            pct(&r, 1.0),
            pct(&b, 0.5),
            pct(&b, 0.99),
        );
    }
}
