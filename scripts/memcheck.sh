#!/usr/bin/env bash
# memcheck.sh: peak resident memory of `bulkmail send` as the list grows.
# Generates CSV lists (default 100,000 and 1,000,000 rows) and an XLSX
# list (default 200,000 rows) with scripts/genlist.go, runs `bulkmail
# send --workers 16` on each against `bulkmail sink` (the capture server,
# in its own process, writing .eml files to a scratch folder) under
# /usr/bin/time -v, and prints the peak RSS of the sender.
#
# The sink runs in its own process on purpose: the default run (no
# --smtp) hosts the capture server inside the sender, and that server
# keeps a record of every message it received, which would be counted
# against the sender.
#
# Environment (defaults in brackets):
#   CSV_ROWS ["100000 1000000"]   sizes of the CSV lists
#   XLSX_ROWS [200000]            sizes of the XLSX lists ("" to skip)
#   SERVER [bulkmail]             bulkmail: `bulkmail sink`, which writes every
#                                 message to disk (~1.5 GB per million rows);
#                                 smtp-sink: Postfix's smtp-sink, which discards
#                                 them and leaves the cores to the sender
#   BENCH_DIR [mktemp]            scratch folder
set -euo pipefail
cd "$(dirname "$0")/.."

CSV_ROWS=${CSV_ROWS-"100000 1000000"}
XLSX_ROWS=${XLSX_ROWS-200000}
SERVER=${SERVER:-bulkmail}
export GOTOOLCHAIN=local

log() { echo "memcheck: $*" >&2; }

if [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing GNU time"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null ||
      { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null; }
  else
    log "/usr/bin/time (GNU time) is missing; install the package time"
    exit 1
  fi
fi

if [ -n "${BENCH_DIR:-}" ]; then
  mkdir -p "$BENCH_DIR"
  WORK=$(mktemp -d "$BENCH_DIR/bulkmail-memcheck.XXXXXX")
else
  WORK=$(mktemp -d -t bulkmail-memcheck.XXXXXX)
fi
SINK_PID=""
cleanup() {
  if [ -n "$SINK_PID" ]; then
    kill "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building bulkmail into $WORK"
go build -o "$WORK/bulkmail" ./cmd/bulkmail

TEMPLATE="$WORK/notice.tmpl"
cat >"$TEMPLATE" <<'EOF'
From: Example Co Operations <ops@example.com>
To: {{.name}} <{{.email}}>
Subject: Planned maintenance for customers in {{.city}}

Dear {{.name}},

on Saturday between 02:00 and 04:00 (local time) the services of your
"{{.plan}}" plan will be briefly unavailable while we upgrade our
systems. There is nothing you need to do.

Kind regards,
Example Co Operations
EOF

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 40000))
}

# start_sink starts a fresh `bulkmail sink` writing to $WORK/outbox, or
# smtp-sink.
start_sink() {
  rm -rf "$WORK/outbox"
  local port
  port=$(free_port)
  case $SERVER in
  bulkmail) "$WORK/bulkmail" sink --listen "127.0.0.1:$port" --dir "$WORK/outbox" 2>"$WORK/sink.err" & ;;
  smtp-sink)
    local u=()
    [ "$(id -u)" = 0 ] && u=(-u nobody)
    smtp-sink "${u[@]}" "127.0.0.1:$port" 1000 >"$WORK/sink.err" 2>&1 &
    ;;
  *) log "SERVER=$SERVER: want bulkmail or smtp-sink"; exit 2 ;;
  esac
  SINK_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  SINK="127.0.0.1:$port"
}

stop_sink() {
  kill "$SINK_PID" 2>/dev/null || true
  wait "$SINK_PID" 2>/dev/null || true
  SINK_PID=""
  rm -rf "$WORK/outbox"
}

declare -a table
measure() { # list rows
  local list=$1 rows=$2 dir="$WORK/run"
  rm -rf "$dir" && mkdir -p "$dir"
  start_sink
  log "sending $rows rows from $(basename "$list") to $SINK"
  local rc=0
  /usr/bin/time -v -o "$dir/time" "$WORK/bulkmail" send --smtp "smtp://$SINK" --list "$list" \
    --template "$TEMPLATE" --result "$dir/results.xlsx" --workers 16 2>"$dir/stderr" || rc=$?
  stop_sink
  if [ "$rc" != 0 ]; then
    log "bulkmail send exited $rc:"; tail -5 "$dir/stderr" >&2; exit 1
  fi
  local kb wall
  kb=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$dir/time")
  wall=$(awk '/Elapsed \(wall clock\)/ { print $NF }' "$dir/time")
  table+=("$(printf '%-6s %10s %10.1f %12s %8.0f' "${list##*.}" "$rows" "$(awk -v k="$kb" 'BEGIN { print k / 1024 }')" "$wall" \
    "$(awk -v n="$rows" -v w="$wall" 'BEGIN { k = split(w, p, ":"); s = 0; for (i = 1; i <= k; i++) s = s * 60 + p[i]; print n / s }')")")
  log "${table[-1]}"
  rm -rf "$dir"
}

for n in $CSV_ROWS; do
  go run scripts/genlist.go -rows "$n" -out "$WORK/list-$n.csv"
  measure "$WORK/list-$n.csv" "$n"
  rm -f "$WORK/list-$n.csv"
done
for n in $XLSX_ROWS; do
  go run scripts/genlist.go -rows "$n" -out "$WORK/list-$n.xlsx"
  measure "$WORK/list-$n.xlsx" "$n"
  rm -f "$WORK/list-$n.xlsx"
done

echo
echo "peak RSS of bulkmail send --workers 16 to $SERVER ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m), $(go env GOVERSION))"
printf '%-6s %10s %10s %12s %8s\n' list rows "peak MB" "wall" "msgs/s"
for line in "${table[@]}"; do echo "$line"; done
