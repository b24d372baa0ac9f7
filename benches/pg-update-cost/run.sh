#!/usr/bin/env bash
# What the outbox's row updates cost PostgreSQL, without HTTP or reminderctl: one backend runs
# the claim and result statements of a pass over N due messages (claims of 256, result writes
# of 32, a commit after each, synchronous_commit on) in a PL/pgSQL procedure, on a fresh
# database migrated with reminderctl's own migrations. It prints that backend's CPU a message
# and how many updates were HOT. Variants (see shapes.sql):
#   current    the pass's shape: a claim sets status 'sending' and the lease, a result 'sent'
#              with the provider id, and a delivery_attempts row.
#   hot-claim  the claim leaves status alone and writes only the lease, so, with room on the
#              page (fillfactor 50) and the leased index dropped, it is a HOT update; the
#              result write is the same.
#   no-history hot-claim without the delivery_attempts row: the outcome and provider id are
#              stored, the attempt's history is not.
#   delete     the claim as in hot-claim, and a result deletes the row and stores nothing: a
#              job queue's shape (graphile-worker's), the floor of what a claim costs.
# usage: benches/pg-update-cost/run.sh [N=100000] [ROUNDS=2]
# Needs psql and a PostgreSQL at $PGURL (default postgres://postgres@127.0.0.1:5432/test) on this
# host (the backend's CPU is read from /proc). Creates and drops databases named pg_update_cost_*.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
migrations="$here/../../migrations/postgres"
N="${1:-100000}"; ROUNDS="${2:-2}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432/test}"
base="${PGURL%/*}"
export PGOPTIONS="-c client_min_messages=warning"

one() { # variant fillfactor extra-sql
  local variant=$1 ff=$2 extra=$3 db="pg_update_cost_${1//-/_}"
  psql -qX "$PGURL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  for f in "$migrations"/*.sql; do psql -qX -v ON_ERROR_STOP=1 "$base/$db" -f "$f" >/dev/null; done
  psql -qX -v ON_ERROR_STOP=1 "$base/$db" >/dev/null <<SQL
ALTER TABLE messages SET (fillfactor = $ff);
$extra
INSERT INTO contacts (id, name, phone) VALUES (1, 'Budi', '+6281234567890');
INSERT INTO messages (kind, subject_id, stage, event_date, dedup_key, contact_id, channel, body,
    status, next_attempt_at)
SELECT 'dunning', g, 'T-3', date '2025-11-20', 'dunning:' || g || ':T-3', 1, 'whatsapp',
    'Halo Budi Santoso, ini pengingat tagihan INV-' || g || ' sebesar Rp 150.000 jatuh tempo '
    || '20 November 2025. Mohon lakukan pembayaran sebelum tanggal tersebut. Terima kasih.',
    'pending', now() - interval '1 hour'
FROM generate_series(1, $N) g;
VACUUM ANALYZE messages;
CHECKPOINT;
SQL
  psql -qX -v ON_ERROR_STOP=1 "$base/$db" -f "$here/shapes.sql" >/dev/null
  local cpu
  cpu=$(psql -qtAX -v ON_ERROR_STOP=1 -v proc="run_${variant//-/_}" "$base/$db" <<'SQL'
SELECT pg_backend_pid() AS pid \gset
CALL :proc();
\setenv PID :pid
\! awk '{print $14 + $15}' /proc/$PID/stat
SQL
)
  local done hot ticks
  done=$(psql -qtAX "$base/$db" -c "SELECT $N - count(*) FILTER (WHERE status = 'pending') FROM messages")
  hot=$(psql -qtAX "$base/$db" -c "SELECT n_tup_hot_upd || ' of ' || n_tup_upd FROM pg_stat_user_tables WHERE relname = 'messages'")
  ticks=$(getconf CLK_TCK)
  [ "$done" = "$N" ] || { echo "$variant: only $done of $N done" >&2; exit 1; }
  echo "$variant: $(( cpu * 1000000 / ticks / N )) µs of backend CPU a message; HOT updates: $hot"
  psql -qX "$PGURL" -c "DROP DATABASE $db" >/dev/null
}

for _ in $(seq "$ROUNDS"); do
  one current 100 ""
  one hot-claim 50 "DROP INDEX messages_leased;"
  one no-history 50 "DROP INDEX messages_leased;"
  one delete 50 "DROP INDEX messages_leased;"
done
