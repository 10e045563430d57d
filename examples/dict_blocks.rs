//! What small cluster blocks cost in bytes and in decompression time, with and without a
//! zstd dictionary shared by the file: the prototype decisions.md #38 names next (a replay in
//! windows decompresses a block once per window its records fall in, so smaller blocks cut
//! the bytes a replay decompresses).
//!
//! Reads the first `RECORDS` records of the largest cluster file in DIR in file order
//! (entity, seq), cuts them into blocks of N records again, and for each N compresses every
//! block's body (the delta-coded seqs, then the records: what a cluster block holds) at the
//! store's zstd level: alone, and with a dictionary trained on every 16th block of that size.
//! Prints the bytes (dictionary included) as a ratio to the raw bodies and to today's 16 KiB
//! blocks, and the time to decompress every block once. Each block decompressed with the
//! dictionary is compared with its raw body.
//!
//! Run: `cargo run --release --example dict_blocks -- DIR [RECORDS] [N ...]`
//! (defaults: 2,000,000 records; N = 8, 20, 83).

use std::path::Path;
use std::time::Instant;

use echolog_format::block::{decode_block, decompress_body, record_offsets};
use echolog_format::cluster::{
    encode_cluster_body, split_cluster_body, ClusterHeader, DirectoryView, CLUSTER_HEADER_LEN,
};

type Error = Box<dyn std::error::Error>;

/// Dictionary size, bytes.
const DICT_BYTES: usize = 112 * 1024;
/// One block in this many is a training sample.
const SAMPLE_EVERY: usize = 16;

/// The records of a file in order: each one's seq and bytes.
struct Records {
    seqs: Vec<u64>,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

fn read_records(data: &[u8], max: usize) -> Result<(Records, usize), Error> {
    let head = data.get(..CLUSTER_HEADER_LEN).ok_or("cluster header")?;
    let h = ClusterHeader::decode(head, data.len() as u64)?;
    let dir = DirectoryView::parse(
        data.get(h.directory_offset as usize..)
            .ok_or("cluster directory")?,
        &h,
    )?;
    let mut r = Records {
        seqs: Vec::new(),
        bytes: Vec::new(),
        ends: Vec::new(),
    };
    let mut stored = 0;
    for i in 0..dir.block_count() {
        if r.seqs.len() >= max {
            break;
        }
        let b = dir.block(i).ok_or("block table")?;
        let (bh, body) = decode_block(data.get(b.offset as usize..).ok_or("block offset")?)?;
        stored += bh.total_len() as usize;
        let raw = decompress_body(&bh, body)?;
        let (seqs, records) = split_cluster_body(&raw, bh.count, bh.first_seq, h.version)?;
        let offsets = record_offsets(records, bh.count)?;
        for (k, (&seq, &off)) in seqs.iter().zip(&offsets).enumerate() {
            let end = offsets.get(k + 1).map_or(records.len(), |&o| o as usize);
            r.seqs.push(seq);
            r.bytes
                .extend_from_slice(records.get(off as usize..end).ok_or("record")?);
            r.ends.push(r.bytes.len());
        }
    }
    Ok((r, stored))
}

/// Raw bodies of blocks of `n` records.
fn bodies(r: &Records, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < r.seqs.len() {
        let end = (start + n).min(r.seqs.len());
        let from = if start == 0 { 0 } else { r.ends[start - 1] };
        let mut body = Vec::new();
        encode_cluster_body(
            &mut body,
            &r.seqs[start..end],
            &r.bytes[from..r.ends[end - 1]],
        );
        out.push(body);
        start = end;
    }
    out
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = Path::new(
        args.first()
            .ok_or("usage: dict_blocks DIR [RECORDS] [N ...]")?,
    );
    let max: usize = args.get(1).map_or(Ok(2_000_000), |a| a.parse())?;
    let sizes: Vec<usize> = match args.get(2..) {
        Some(a) if !a.is_empty() => a.iter().map(|a| a.parse()).collect::<Result<_, _>>()?,
        _ => vec![8, 20, 83],
    };
    let mut largest: Option<(u64, std::path::PathBuf)> = None;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "clu") {
            let len = std::fs::metadata(&p)?.len();
            if largest.as_ref().is_none_or(|(l, _)| len > *l) {
                largest = Some((len, p));
            }
        }
    }
    let (_, path) = largest.ok_or("no cluster file: compact the store first")?;
    let data = std::fs::read(&path)?;
    let (r, stored) = read_records(&data, max)?;
    let raw: usize = r.bytes.len();
    println!(
        "{}: {} records, {raw} record bytes; today's blocks {stored} bytes ({:.4} of the records)",
        path.display(),
        r.seqs.len(),
        stored as f64 / raw as f64
    );
    // The store's own zstd level.
    let level = echolog::Options::default().zstd_level;
    for n in sizes {
        let blocks = bodies(&r, n);
        let body_bytes: usize = blocks.iter().map(Vec::len).sum();
        let plain_packed: Vec<Vec<u8>> = blocks
            .iter()
            .map(|b| zstd::bulk::compress(b, level))
            .collect::<Result<_, _>>()?;
        let plain: usize = plain_packed.iter().map(Vec::len).sum();
        let samples: Vec<&Vec<u8>> = blocks.iter().step_by(SAMPLE_EVERY).collect();
        let t = Instant::now();
        let dict = zstd::dict::from_samples(&samples, DICT_BYTES)?;
        let train = t.elapsed().as_secs_f64();
        let mut c = zstd::bulk::Compressor::with_dictionary(level, &dict)?;
        let packed: Vec<Vec<u8>> = blocks
            .iter()
            .map(|b| c.compress(b))
            .collect::<Result<_, _>>()?;
        let with_dict: usize = packed.iter().map(Vec::len).sum::<usize>() + dict.len();
        let mut d = zstd::bulk::Decompressor::with_dictionary(&dict)?;
        let t = Instant::now();
        for (p, b) in packed.iter().zip(&blocks) {
            let out = d.decompress(p, b.len())?;
            if out != *b {
                return Err("a block did not decompress to its body".into());
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let mut d0 = zstd::bulk::Decompressor::new()?;
        let t = Instant::now();
        for (p, b) in plain_packed.iter().zip(&blocks) {
            d0.decompress(p, b.len())?;
        }
        let secs0 = t.elapsed().as_secs_f64();
        println!(
            "{n} records a block: {} blocks, bodies {body_bytes} bytes; alone {plain} ({:.4} of the records, {:.2}x today's), decompressed in {:.0} ns a record; with a {} KiB dictionary ({train:.1} s to train) {with_dict} ({:.4}, {:.2}x today's), decompressed in {:.0} ns a record",
            blocks.len(),
            plain as f64 / raw as f64,
            plain as f64 / stored as f64,
            secs0 * 1e9 / r.seqs.len() as f64,
            dict.len() / 1024,
            with_dict as f64 / raw as f64,
            with_dict as f64 / stored as f64,
            secs * 1e9 / r.seqs.len() as f64,
        );
    }
    Ok(())
}
