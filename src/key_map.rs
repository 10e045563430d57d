//! Hash maps keyed by what clients send (entities, kinds, tags, timestamps, ids).
//!
//! An unseeded hash (FxHash) lets anyone find, offline and by brute force, thousands of keys
//! that land in one bucket; sent as events, each insert into the active index then scans all
//! of them (HashDoS). [`KeyHasher`] keys foldhash with seeds drawn from the operating system's
//! randomness: one shared seed per process and one more per map, so colliding keys cannot be
//! computed in advance and differ from map to map and from run to run.
//!
//! Why foldhash and not std's SipHash: SipHash is a keyed PRF with a stronger guarantee, but
//! it cost 10-19% of the library's ingest rate (the active index hashes ~5 keys per event);
//! foldhash with random seeds cost nothing measurable (docs/decisions.md #33).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use foldhash::fast::SeedableRandomState;
use foldhash::SharedSeed;

/// A hash map with a randomly seeded hasher (see the module doc).
pub type KeyMap<K, V> = HashMap<K, V, KeyHasher>;

/// A u64 from the operating system's randomness: std seeds each `RandomState` from it
/// (per thread, then incremented), and SipHash of a constant under those keys is uniform.
fn os_random_u64() -> u64 {
    RandomState::new().hash_one(0u64)
}

fn process_seed() -> &'static SharedSeed {
    static SEED: OnceLock<SharedSeed> = OnceLock::new();
    SEED.get_or_init(|| SharedSeed::from_u64(os_random_u64()))
}

/// foldhash seeded from the operating system's randomness, per process and per map.
#[derive(Clone, Debug)]
pub struct KeyHasher(SeedableRandomState);

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher(SeedableRandomState::with_seed(
            os_random_u64(),
            process_seed(),
        ))
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = <SeedableRandomState as BuildHasher>::Hasher;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_hashes_the_same_key_differently() {
        // With an unseeded hasher every map (and every run) would agree on every key.
        let key = "product:42";
        let hashes: std::collections::HashSet<u64> = (0..16)
            .map(|_| KeyHasher::default().hash_one(key))
            .collect();
        assert_eq!(hashes.len(), 16);
    }

    #[test]
    fn one_map_hashes_a_key_the_same_way_every_time() {
        let h = KeyHasher::default();
        assert_eq!(h.hash_one("tenant:t7"), h.clone().hash_one("tenant:t7"));
        let mut m: KeyMap<Box<str>, u32> = KeyMap::default();
        m.insert("a".into(), 1);
        assert_eq!(m.get("a"), Some(&1));
    }
}
