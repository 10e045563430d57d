#!/usr/bin/env bash
# PostgreSQL baselines for the performance targets (docs/benchmarks.md), measured in the same run as echolog.
# Usage: benches/pg_baseline.sh [events]   (default 1000000)
# Needs PostgreSQL 15 server binaries (Debian: apt-get install postgresql) and pgbench.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | tail -1)}
WORK=$(mktemp -d /tmp/echolog-pg.XXXXXX)
PORT=54329
chmod 755 "$WORK"
chown postgres "$WORK"
cleanup() { runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" stop -m fast >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --example compare >/dev/null
./target/release/examples/compare csv "$N" > "$WORK/events.csv"
chmod 644 "$WORK/events.csv"

runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust >/dev/null
# Durable settings, as echolog's sync=always: fsync and synchronous_commit on.
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
  -o "-p $PORT -k $WORK -c listen_addresses='' -c fsync=on -c synchronous_commit=on -c shared_buffers=1GB" start >/dev/null
PSQL=(runuser -u postgres -- psql -h "$WORK" -p $PORT -U postgres -v ON_ERROR_STOP=1 -qAt)

"${PSQL[@]}" -c "CREATE TABLE events (seq bigserial PRIMARY KEY, entity text NOT NULL, kind text NOT NULL, ts bigint NOT NULL, tenant text NOT NULL, tags text[] NOT NULL, payload jsonb NOT NULL)"
"${PSQL[@]}" -c "CREATE INDEX events_entity_ts ON events (entity, ts)"
"${PSQL[@]}" -c "CREATE INDEX events_tenant_ts ON events (tenant, ts)"
start=$(date +%s.%N)
"${PSQL[@]}" -c "\\copy events (entity, kind, ts, tenant, tags, payload) FROM '$WORK/events.csv' WITH (FORMAT csv)"
end=$(date +%s.%N)
echo "postgres COPY into indexed table: $N events in $(echo "$end - $start" | bc)s = $(echo "$N / ($end - $start)" | bc) events/s"
"${PSQL[@]}" -c "VACUUM ANALYZE events"
echo "postgres bytes on disk (table + indexes + toast): $("${PSQL[@]}" -c "SELECT pg_total_relation_size('events')")"

bench() { # name, sql, transactions
  echo "$2" > "$WORK/q.sql"
  local lat
  lat=$(runuser -u postgres -- "$PGBIN/pgbench" -h "$WORK" -p $PORT -U postgres -n -f "$WORK/q.sql" -t "$3" -c 1 -r postgres 2>/dev/null | awk '/latency average/ {print $4}')
  echo "postgres $1: mean $(echo "$lat * 1000" | bc) us ($3 runs, pgbench, 1 client)"
}
bench "history typical entity" "SELECT * FROM events WHERE entity = 'product:4242' ORDER BY seq;" 2000
bench "history hot entity" "SELECT * FROM events WHERE entity = 'product:0' ORDER BY seq;" 20
bench "count per hour one tenant" "SELECT ts / 3600000 * 3600000 AS h, count(*) FROM events WHERE tenant = 't7' GROUP BY 1 ORDER BY 1;" 200

./target/release/examples/compare run "$N" "$WORK/echolog"
