"""The other engines of `benches/compare/run`: PostgreSQL, DuckDB and ClickHouse (chDB).

    engines.py postgres WORK SOCKET_DIR PORT   load WORK/events.csv, time the query lists
    engines.py duckdb WORK                     the same, in process
    engines.py clickhouse WORK                 the same, in process (chDB)
    engines.py report WORK N                   one table of every results-*.jsonl in WORK

Each engine gets the schema a DBA would choose for these queries, loads the same CSV, runs the
lists of WORK/queries.json one query at a time with every row fetched into the client, and
writes WORK/results-ENGINE.jsonl in the format of the echolog half (server/benches/compare.rs).
`report` checks that every engine returned the same rows (count and sum of seqs per class) and
exits non-zero if not.
"""

import json
import os
import sys
import time

CLASSES = [
    ("random product", "random", False, None),
    ("newest 50 of a busy entity", "busy_newest", True, 50),
    ("whole history of a busy entity", "busy", False, None),
    ("whole history of the hottest entity", "hottest", False, None),
]
COUNT_CLASS = "hourly counts of one tenant"
ROUND_TRIP_CLASS = "round trip of a no-op call"  # the transport's floor: SELECT 1, Health/Check
ROUND_TRIPS = 2000
WARMUP_QUERIES = 20  # untimed queries before each timed list, as the echolog half does
COLUMNS = "seq, entity, kind, ts, tenant, payload"


def percentile(sorted_us, p):
    if not sorted_us:
        return 0.0
    return sorted_us[round((len(sorted_us) - 1) * p)]


class Results:
    def __init__(self, work, engine):
        self.engine = engine
        self.out = open(os.path.join(work, f"results-{engine}.jsonl"), "w")

    def write(self, **fields):
        line = json.dumps({"engine": self.engine, **fields})
        self.out.write(line + "\n")
        self.out.flush()
        print(f"{self.engine}: {line}", flush=True)

    def timing(self, cls, us, rows, check, seconds):
        us = sorted(us)
        self.write(
            **{"class": cls},
            queries=len(us),
            p50_us=percentile(us, 0.5),
            p99_us=percentile(us, 0.99),
            rows=rows,
            check=check,
            seconds=seconds,
        )


def run_lists(results, queries, history, count, noop):
    """history(entity, reverse, limit) -> (rows, sum of seqs); count() -> [(hour, n)];
    noop() runs a query that does nothing."""
    for _ in range(WARMUP_QUERIES):
        noop()
    us = []
    started = time.perf_counter()
    for _ in range(ROUND_TRIPS):
        t = time.perf_counter()
        noop()
        us.append((time.perf_counter() - t) * 1e6)
    results.timing(ROUND_TRIP_CLASS, us, 0, 0, time.perf_counter() - started)
    for cls, key, reverse, limit in CLASSES:
        for e in queries["random"][:WARMUP_QUERIES]:
            history(e, reverse, limit)
        us, rows, check = [], 0, 0
        started = time.perf_counter()
        for e in queries[key]:
            t = time.perf_counter()
            r, s = history(e, reverse, limit)
            us.append((time.perf_counter() - t) * 1e6)
            rows += r
            check += s
        results.timing(cls, us, rows, check, time.perf_counter() - started)
    c = queries["count"]
    for _ in range(WARMUP_QUERIES):
        count()
    us, buckets, total = [], 0, 0
    started = time.perf_counter()
    for _ in range(c["runs"]):
        t = time.perf_counter()
        rows = count()
        us.append((time.perf_counter() - t) * 1e6)
        buckets, total = len(rows), sum(int(n) for _, n in rows)
    results.timing(COUNT_CLASS, us, buckets, total, time.perf_counter() - started)


def history_sql(reverse, limit):
    order = "DESC" if reverse else "ASC"
    lim = f" LIMIT {int(limit)}" if limit else ""
    return f"SELECT {COLUMNS} FROM events WHERE entity = $1 ORDER BY seq {order}{lim}"


def count_sql(c, placeholder, div):
    """Hourly counts; div(a, b) is the engine's integer division."""
    b = int(c["bucket_ms"])
    p = placeholder
    return (
        f"SELECT {div('ts', b)} * {b} AS h, count(*) FROM events "
        f"WHERE tenant = {p(1)} AND ts >= {p(2)} AND ts < {p(3)} GROUP BY h ORDER BY h"
    )


def postgres(work, socket_dir, port):
    import psycopg

    results = Results(work, "postgres")
    queries = json.load(open(os.path.join(work, "queries.json")))
    conn = psycopg.connect(host=socket_dir, port=port, user="postgres", dbname="postgres",
                           autocommit=True)
    cur = conn.cursor()
    started = time.perf_counter()
    cur.execute("DROP TABLE IF EXISTS events")
    # Text columns, jsonb payload; indexes built after the bulk load, as a DBA loads a table.
    cur.execute("CREATE TABLE events (seq bigint PRIMARY KEY, entity text NOT NULL, "
                "kind text NOT NULL, ts bigint NOT NULL, tenant text NOT NULL, "
                "payload jsonb NOT NULL)")
    with open(os.path.join(work, "events.csv"), "rb") as f:
        with cur.copy("COPY events (seq, entity, kind, ts, tenant, payload) "
                      "FROM STDIN WITH (FORMAT csv)") as copy:
            while chunk := f.read(1 << 20):
                copy.write(chunk)
    cur.execute("CREATE INDEX events_entity_seq ON events (entity, seq)")
    cur.execute("CREATE INDEX events_tenant_ts ON events (tenant, ts)")
    cur.execute("VACUUM ANALYZE events")
    results.write(**{"class": "load"}, seconds=time.perf_counter() - started)
    cur.execute("SELECT pg_total_relation_size('events')")
    results.write(**{"class": "disk"}, bytes=cur.fetchone()[0])
    # psycopg's %s placeholders; prepared after a few executions (psycopg's default).
    sqls = {}

    def history(entity, reverse, limit):
        sql = sqls.setdefault((reverse, limit),
                              history_sql(reverse, limit).replace("$1", "%s"))
        cur.execute(sql, (entity,))
        rows = cur.fetchall()
        return len(rows), sum(r[0] for r in rows)

    c = queries["count"]
    csql = count_sql(c, lambda i: "%s", lambda a, b: f"{a} / {b}")

    def count():
        cur.execute(csql, (c["tenant"], c["from_ts"], c["to_ts"]))
        return cur.fetchall()

    def noop():
        cur.execute("SELECT 1")
        cur.fetchall()

    run_lists(results, queries, history, count, noop)
    conn.close()


def duckdb_engine(work):
    import duckdb

    results = Results(work, "duckdb")
    queries = json.load(open(os.path.join(work, "queries.json")))
    path = os.path.join(work, "duck.db")
    for p in (path, path + ".wal"):
        if os.path.exists(p):
            os.remove(p)
    con = duckdb.connect(path)
    started = time.perf_counter()
    con.execute("CREATE TABLE events (seq BIGINT PRIMARY KEY, entity VARCHAR NOT NULL, "
                "kind VARCHAR NOT NULL, ts BIGINT NOT NULL, tenant VARCHAR NOT NULL, "
                "payload JSON NOT NULL)")
    con.execute("INSERT INTO events SELECT * FROM read_csv(?, header = false, "
                "columns = {'seq': 'BIGINT', 'entity': 'VARCHAR', 'kind': 'VARCHAR', "
                "'ts': 'BIGINT', 'tenant': 'VARCHAR', 'payload': 'VARCHAR'})",
                [os.path.join(work, "events.csv")])
    # An ART index answers the point lookups by entity.
    con.execute("CREATE INDEX events_entity ON events (entity)")
    con.execute("CHECKPOINT")
    results.write(**{"class": "load"}, seconds=time.perf_counter() - started)
    results.write(**{"class": "disk"}, bytes=os.path.getsize(path))

    def history(entity, reverse, limit):
        t = con.sql(history_sql(reverse, limit), params=[entity]).to_arrow_table()
        return t.num_rows, int(sum(t.column("seq").to_pylist()))

    c = queries["count"]
    csql = count_sql(c, lambda i: f"${i}", lambda a, b: f"{a} // {b}")

    def count():
        return con.execute(csql, [c["tenant"], c["from_ts"], c["to_ts"]]).fetchall()

    run_lists(results, queries, history, count, lambda: con.sql("SELECT 1").fetchall())
    con.close()


def clickhouse(work):
    import pyarrow as pa
    import pyarrow.compute as pc
    from chdb import session

    results = Results(work, "clickhouse")
    queries = json.load(open(os.path.join(work, "queries.json")))
    path = os.path.join(work, "chdb")
    s = session.Session(path)

    def q(sql, fmt="CSV"):
        r = s.query(sql, fmt)
        if r.has_error():
            raise RuntimeError(f"chdb: {r.error_message()}: {sql}")
        return r

    started = time.perf_counter()
    q("CREATE DATABASE IF NOT EXISTS bench")
    q("DROP TABLE IF EXISTS bench.events")
    # Ordered by (entity, seq): an entity's events are contiguous; a projection ordered by
    # (tenant, ts) serves the tenant counts.
    q("CREATE TABLE bench.events (seq UInt64, entity String, kind LowCardinality(String), "
      "ts Int64, tenant LowCardinality(String), payload String, "
      "PROJECTION by_tenant (SELECT * ORDER BY tenant, ts)) "
      "ENGINE = MergeTree ORDER BY (entity, seq)")
    csv = os.path.join(work, "events.csv")
    q(f"INSERT INTO bench.events SELECT * FROM file('{csv}', 'CSV', "
      "'seq UInt64, entity String, kind String, ts Int64, tenant String, payload String')")
    q("OPTIMIZE TABLE bench.events FINAL")
    results.write(**{"class": "load"}, seconds=time.perf_counter() - started)
    r = q("SELECT sum(bytes_on_disk) FROM system.parts "
          "WHERE database = 'bench' AND table = 'events' AND active")
    results.write(**{"class": "disk"}, bytes=int(r.bytes().decode().strip()))

    def history(entity, reverse, limit):
        sql = history_sql(reverse, limit).replace("FROM events", "FROM bench.events")
        sql = sql.replace("$1", "'" + entity.replace("'", "''") + "'")
        t = pa.ipc.open_stream(q(sql, "ArrowStream").bytes()).read_all()
        if t.num_rows == 0:
            return 0, 0
        return t.num_rows, int(pc.sum(t.column("seq")).as_py())

    c = queries["count"]
    csql = count_sql(c, lambda i: {1: f"'{c['tenant']}'", 2: str(c["from_ts"]),
                                   3: str(c["to_ts"])}[i], lambda a, b: f"intDiv({a}, {b})")
    csql = csql.replace("FROM events", "FROM bench.events")

    def count():
        out = q(csql, "CSV").bytes().decode()
        return [tuple(line.split(",")) for line in out.splitlines() if line]

    run_lists(results, queries, history, count, lambda: q("SELECT 1"))


# Suffix of echolog's whole-history classes read in process (server/benches/compare.rs).
IN_PROCESS_SUFFIX = ", in process into columns"


# The targets of the history-at-scale work, as (check, description) per class.
def targets(cls, e, best):
    if cls == "random product":
        ok = e["p50_us"] <= 150 and e["p99_us"] <= 1000 and best and best["p50_us"] >= 3 * e["p50_us"]
        return ok, "p50 <= 150 us, p99 <= 1 ms, >= 3x the best other"
    if cls == "newest 50 of a busy entity":
        return e["p50_us"] <= 200 and e["p99_us"] <= 1000, "p50 <= 200 us, p99 <= 1 ms"
    if cls.startswith("whole history"):
        rate = e["rows"] / e["seconds"] if e["seconds"] else 0
        return rate >= 2.5e6, ">= 2.5M events/s, faster than ClickHouse"
    if cls == COUNT_CLASS:
        ok = e["p50_us"] <= 500 and best and best["p50_us"] >= 5 * e["p50_us"]
        return ok, "p50 <= 0.5 ms, >= 5x the best other"
    return None, ""


def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} us"


def report(work, n):
    rows = {}
    for name in sorted(os.listdir(work)):
        if name.startswith("results-") and name.endswith(".jsonl"):
            for line in open(os.path.join(work, name)):
                r = json.loads(line)
                rows.setdefault(r["class"], {})[r["engine"]] = r
    engines = [e for e in ("postgres", "duckdb", "clickhouse", "echolog")
               if any(e in v for v in rows.values())]
    others = [e for e in engines if e != "echolog"]
    raw = rows.get("disk", {}).get("echolog", {}).get("raw_bytes")
    print(f"\n## {n} events of the seed workload; p50 / p99 per query, one query at a time\n")
    print("| class | " + " | ".join(engines) + " | echolog vs best other | target | met |")
    print("|---" * (len(engines) + 4) + "|")
    disagree = []
    for cls, _, _, _ in [(ROUND_TRIP_CLASS, None, None, None)] + CLASSES + \
            [(COUNT_CLASS, None, None, None)]:
        got = rows.get(cls, {})
        answers = {(r["rows"], r["check"]) for r in got.values()}
        if len(answers) > 1:
            disagree.append((cls, {k: (v["rows"], v["check"]) for k, v in got.items()}))
        cells = []
        for e in engines:
            r = got.get(e)
            if r is None:
                cells.append("-")
                continue
            cell = f"{fmt_us(r['p50_us'])} / {fmt_us(r['p99_us'])}"
            if cls.startswith("whole history") and r["seconds"]:
                cell += f"; {r['rows'] / r['seconds'] / 1e6:.2f}M ev/s"
            cells.append(cell)
        e = got.get("echolog")
        best = min((got[o] for o in others if o in got), key=lambda r: r["p50_us"], default=None)
        if cls.startswith("whole history"):
            best = min((got[o] for o in others if o in got), key=lambda r: r["seconds"],
                       default=None)
            ratio = f"{best['seconds'] / e['seconds']:.2f}x ({best['engine']}, total time)" \
                if e and best and e["seconds"] else "-"
        else:
            ratio = f"{best['p50_us'] / e['p50_us']:.2f}x ({best['engine']}, p50)" \
                if e and best and e["p50_us"] else "-"
        met, target = targets(cls, e, best) if e else (None, "")
        if cls.startswith("whole history") and e and "clickhouse" in got:
            met = met and e["seconds"] < got["clickhouse"]["seconds"]
        rcount = next(iter(got.values()))["rows"] if got else 0
        unit = "buckets" if cls == COUNT_CLASS else "rows in all"
        label = cls if cls == ROUND_TRIP_CLASS else f"{cls} ({rcount} {unit})"
        print(f"| {label} | " + " | ".join(cells) +
              f" | {ratio} | {target} | {'yes' if met else 'no' if met is not None else '-'} |")
    disk = rows.get("disk", {})
    if raw:
        cells = [f"{disk[e]['bytes'] / 1e6:.1f} MB ({disk[e]['bytes'] / raw:.3f}x)"
                 if e in disk else "-" for e in engines]
        best = min((disk[o]["bytes"] for o in others if o in disk), default=None)
        ratio = f"{best / disk['echolog']['bytes']:.2f}x smaller" if best else "-"
        met = disk["echolog"]["bytes"] <= 0.15 * raw
        print(f"| bytes on disk (raw {raw / 1e6:.1f} MB) | " + " | ".join(cells) +
              f" | {ratio} | <= 0.15x raw | {'yes' if met else 'no'} |")
    load = rows.get("load", {})
    cells = [f"{load[e]['seconds']:.1f} s" if e in load else "-" for e in engines]
    print("| load (echolog: until compaction is idle) | " + " | ".join(cells) + " | | | |")
    # echolog's whole histories in process (into flat columns) beside the in-process engines.
    for cls, _, _, _ in CLASSES:
        if not cls.startswith("whole history"):
            continue
        e = rows.get(cls + IN_PROCESS_SUFFIX, {}).get("echolog")
        got = rows.get(cls, {})
        if not e or not e["seconds"]:
            continue
        if got and {(r["rows"], r["check"]) for r in got.values()} != {(e["rows"], e["check"])}:
            disagree.append((cls + IN_PROCESS_SUFFIX, {"echolog": (e["rows"], e["check"])}))
        line = f"echolog {cls}{IN_PROCESS_SUFFIX}: {e['rows'] / e['seconds'] / 1e6:.2f}M ev/s"
        for o in ("duckdb", "clickhouse"):
            if o in got and got[o]["seconds"]:
                line += (f"; {o} in process {got[o]['rows'] / got[o]['seconds'] / 1e6:.2f}M ev/s"
                         f" ({got[o]['seconds'] / e['seconds']:.2f}x its time)")
        print(line)
    mem = rows.get("server memory", {}).get("echolog")
    if mem:
        print(f"\necholog server anonymous RSS after the queries: {mem['rss_anon']}")
    if disagree:
        for cls, answers in disagree:
            print(f"engines disagree on {cls}: (rows, check) {answers}", file=sys.stderr)
        sys.exit(1)
    print(f"\nAll engines returned the same rows for every class (count and sum of seqs; "
          f"counts: buckets and total).")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    mode, work = sys.argv[1], sys.argv[2]
    if mode == "postgres":
        postgres(work, sys.argv[3], int(sys.argv[4]))
    elif mode == "duckdb":
        duckdb_engine(work)
    elif mode == "clickhouse":
        clickhouse(work)
    elif mode == "report":
        report(work, sys.argv[3] if len(sys.argv) > 3 else "?")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
