//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use echolog::storage::sim::SimDisk;
use echolog::{Event, Options, Store};

/// A small event of `entity` whose ts and payload come from `i`.
pub fn ev(entity: &str, i: u64) -> Event {
    Event {
        entity: entity.into(),
        kind: "k".into(),
        ts: 1_000 + i as i64,
        tags: vec!["tenant:t1".into()],
        payload: format!("{{\"i\":{i},\"pad\":\"abcdefghijklmnopqrstuvwxyz\"}}").into_bytes(),
        id: None,
    }
}

/// Options with tiny segments and blocks, so a few events make several sealed segments.
pub fn small() -> Options {
    Options {
        segment_size_bytes_max: 4096,
        block_raw_bytes_target: 512,
        // Tests here count and fail individual file calls; a background compaction would take
        // some of them. tests/compaction.rs and the model tests compact on purpose.
        compaction: false,
        ..Options::default()
    }
}

/// A simulated disk with its data directory, and `small()` options pointing at it.
pub fn sim_store_opts() -> (SimDisk, PathBuf, Options) {
    let disk = SimDisk::new();
    let dir = PathBuf::from("/sim/data");
    let opts = Options {
        backend: Some(disk.backend()),
        ..small()
    };
    (disk, dir, opts)
}

pub fn open(dir: &Path, opts: &Options) -> Store {
    Store::open(dir, opts.clone()).unwrap()
}

/// The files of `dir` whose extension is `ext`, sorted by name (a store's files sort by seq).
pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}
