#!/usr/bin/env bash
# What the outbox's row updates cost PostgreSQL, without HTTP or reminderctl: one backend runs
# the claim and result statements of a pass over N due messages (claims of 256, result writes
# of 32, a commit after each, synchronous_commit on) in a PL/pgSQL procedure, on a fresh
# database migrated with reminderctl's own migrations. It prints that backend's CPU a message
# and how many updates were HOT. Variants (the procedures below):
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

# procedure NAME CLAIM_FILTER CLAIM_SETS RESULT: one variant's loop. It claims up to 256 due
# messages (FOR UPDATE SKIP LOCKED, CLAIM_FILTER added to the due conditions, CLAIM_SETS before
# the lease), commits, then runs RESULT for each 32 of them (their ids in `batch`), committing
# each, until nothing is due.
procedure() {
  cat <<SQL
CREATE PROCEDURE run_$1() LANGUAGE plpgsql AS \$\$
DECLARE ids bigint[]; batch bigint[];
BEGIN
  LOOP
    WITH due AS MATERIALIZED (
        SELECT id FROM messages WHERE channel = 'whatsapp' AND connection IS NULL
          AND status = 'pending' AND next_attempt_at <= now() $2
        ORDER BY next_attempt_at, id LIMIT 256 FOR UPDATE SKIP LOCKED
    ), cl AS (
        UPDATE messages m SET $3 claimed_by = 'bench', claimed_until = now() + interval '5 minutes'
        FROM due WHERE m.id = due.id RETURNING m.id
    ) SELECT array_agg(id ORDER BY id) INTO ids FROM cl;
    COMMIT;
    EXIT WHEN ids IS NULL;
    FOR i IN 0..7 LOOP
      batch := ids[i * 32 + 1 : i * 32 + 32];
      CONTINUE WHEN cardinality(batch) = 0;
      $4;
      COMMIT;
    END LOOP;
  END LOOP;
END \$\$;
SQL
}

# The result write: `sent`, the provider id and the body, on the rows still claimed by this loop
# and in status STATUS; then any more SQL (a RETURNING).
sent() {
  echo "UPDATE messages m SET status = 'sent', attempts = 1, provider = 'twilio',
      provider_message_id = 'SM' || m.id, recipient = 'whatsapp:+6281234567890',
      body = m.body, sent_at = now(), claimed_by = NULL, claimed_until = NULL
    WHERE m.id = ANY (batch) AND CASE WHEN m.claimed_by = 'bench' THEN m.status END = '$1' ${2:-}"
}

# ... and its history row.
with_history() {
  echo "WITH upd AS ($(sent "$1" "RETURNING m.id"))
    INSERT INTO delivery_attempts (message_id, attempt, channel, provider, outcome,
        provider_message_id, claimed_by, at)
    SELECT id, 1, 'whatsapp', 'twilio', 'sent', 'SM' || id, 'bench', now() FROM upd"
}

procedures() {
  local unleased="AND (claimed_until IS NULL OR claimed_until <= now())"
  procedure current "" "status = 'sending'," "$(with_history sending)"
  procedure hot_claim "$unleased" "" "$(with_history pending)"
  procedure no_history "$unleased" "" "$(sent pending)"
  procedure delete "$unleased" "" "DELETE FROM messages m WHERE m.id = ANY (batch) AND m.claimed_by = 'bench'"
}

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
  procedures | psql -qX -v ON_ERROR_STOP=1 "$base/$db" >/dev/null
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
