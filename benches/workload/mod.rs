//! The seed workload (typical events of the users), shared by the benches and the examples: JSON payloads of
//! about 165 bytes, entities skewed over 500k keys, 1k tenants (`tenant:` tag), 20 kinds,
//! increasing ts with 1% of events late by up to an hour.

use echolog::Event;

/// A 64-bit mix (splitmix64), so that event `i` is the same on every run.
pub fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Entity number with a Zipf-like skew over `ENTITIES` keys (rank ~ 1/u).
pub const ENTITIES: u64 = 500_000;

pub fn entity_of(r: u64) -> u64 {
    // u in (0, 1]; rank = ENTITIES^(u) - 1 gives a log-uniform, heavy-headed distribution.
    let u = ((r >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    ((ENTITIES as f64).powf(u) - 1.0) as u64 % ENTITIES
}

pub fn event(i: u64) -> Event {
    let r = mix(i);
    let entity = entity_of(r);
    let tenant = (r >> 7) % 1000;
    let late = if r.is_multiple_of(100) {
        (r >> 20) as i64 % 3_600_000
    } else {
        0
    };
    Event {
        entity: format!("product:{entity}"),
        kind: format!("kind_{}", (r >> 17) % 20),
        ts: 1_700_000_000_000 + i as i64 * 10 - late,
        tags: vec![format!("tenant:t{tenant}")],
        payload: format!(
            "{{\"product\":{entity},\"old_price\":{},\"new_price\":{},\"currency\":\"EUR\",\"source\":\"feed-{}\",\"note\":\"scheduled price update\",\"batch\":{}}}",
            12900 + r % 1000,
            11900 + (r >> 9) % 700,
            (r >> 3) % 30,
            i / 1000
        )
        .into_bytes(),
        id: None,
    }
}

pub fn batch(start: u64, n: u64) -> Vec<Event> {
    (start..start + n).map(event).collect()
}

/// Appends events 0..n in batches of 1000 and seals the active segment.
#[allow(dead_code)] // not every bench or example that includes this module loads a store
pub fn load(s: &echolog::Store, n: u64) {
    let mut i = 0;
    while i < n {
        let k = 1000.min(n - i);
        s.append(batch(i, k)).expect("append");
        i += k;
    }
    s.seal_active().expect("seal");
}

/// The query lists of the scale and compare benchmarks, the same on every run and for every
/// engine.
#[allow(dead_code)] // used by the benches that time queries, not by every includer
pub struct Lists {
    /// Entities drawn uniformly over all keys: most have a few events.
    pub random: Vec<String>,
    /// Entities drawn by event frequency (the entity of a random event), for newest-50.
    pub busy_newest: Vec<String>,
    /// Entities drawn by event frequency, for whole histories.
    pub busy: Vec<String>,
    /// The hottest entity, a few times.
    pub hottest: Vec<String>,
}

#[allow(dead_code)]
pub fn lists() -> Lists {
    let by_frequency = |k: u64| format!("product:{}", entity_of(mix(k * 7919 + 13)));
    Lists {
        random: (0..2000)
            .map(|k| format!("product:{}", mix(k) % ENTITIES))
            .collect(),
        busy_newest: (0..2000).map(by_frequency).collect(),
        busy: (10_000..10_040).map(by_frequency).collect(),
        hottest: vec!["product:0".into(); 3],
    }
}

/// The tenant of the count query class.
#[allow(dead_code)]
pub const COUNT_TENANT: &str = "tenant:t7";
/// The count window: 30 days from the workload's first ts, half open.
#[allow(dead_code)]
pub const COUNT_FROM_TS: i64 = 1_700_000_000_000;
#[allow(dead_code)]
pub const COUNT_TO_TS: i64 = COUNT_FROM_TS + 30 * 86_400_000;

/// Hourly counts of one tenant over 30 days of the workload's time line.
#[allow(dead_code)]
pub fn tenant_count() -> echolog::CountQuery {
    echolog::CountQuery {
        tags: vec![COUNT_TENANT.into()],
        bucket: echolog::Bucket::Hour,
        from_ts: Some(COUNT_FROM_TS),
        to_ts: Some(COUNT_TO_TS),
        ..Default::default()
    }
}

/// A history sink that materializes events into flat columns, as an Arrow builder would
/// (what DuckDB and ClickHouse hand back in process): every field's bytes copied into one
/// buffer per column, no allocation per event.
#[allow(dead_code)]
#[derive(Default)]
pub struct Columns {
    pub seqs: Vec<u64>,
    pub ts: Vec<i64>,
    pub deleted_by: Vec<u64>,
    /// Entity, kind, tags and id of every row, back to back; `string_ends` ends each one and
    /// `row_ends` ends each row's strings in `string_ends`.
    pub strings: Vec<u8>,
    pub string_ends: Vec<usize>,
    pub row_ends: Vec<usize>,
    pub payloads: Vec<u8>,
    pub payload_ends: Vec<usize>,
}

#[allow(dead_code)]
impl Columns {
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    fn push_string(&mut self, s: &[u8]) {
        self.strings.extend_from_slice(s);
        self.string_ends.push(self.strings.len());
    }
}

impl echolog::EventSink for Columns {
    fn push(&mut self, ev: &echolog::EventRef<'_>) {
        self.seqs.push(ev.seq);
        self.ts.push(ev.ts());
        self.deleted_by.push(ev.deleted_by);
        self.push_string(ev.entity().as_bytes());
        self.push_string(ev.kind().as_bytes());
        self.push_string(ev.id().as_bytes());
        for t in ev.tag_bytes() {
            self.push_string(t);
        }
        self.row_ends.push(self.string_ends.len());
        self.payloads.extend_from_slice(ev.payload());
        self.payload_ends.push(self.payloads.len());
    }

    fn truncate(&mut self, n: usize) {
        self.seqs.truncate(n);
        self.ts.truncate(n);
        self.deleted_by.truncate(n);
        self.row_ends.truncate(n);
        self.string_ends
            .truncate(self.row_ends.last().copied().unwrap_or(0));
        self.strings
            .truncate(self.string_ends.last().copied().unwrap_or(0));
        self.payload_ends.truncate(n);
        self.payloads
            .truncate(self.payload_ends.last().copied().unwrap_or(0));
    }
}
