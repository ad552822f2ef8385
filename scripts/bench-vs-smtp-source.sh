#!/usr/bin/env bash
# bench-vs-smtp-source.sh: bulkmail against Postfix's smtp-source, the
# classic SMTP load generator, both sending to smtp-sink on loopback with
# the same message count, message size and number of sessions; directly
# and through a proxy that delays each direction (scripts/delayproxy).
# Prints messages/s for each (median of RUNS runs) and their ratio.
#
# bulkmail is measured as the product runs: `bulkmail send` from start to
# exit, which reads the list, renders each message, sends, writes its
# journal and the XLSX result file; once as it runs by default (every
# message's commit and reply fsynced before the worker's next) and once
# with --journal-sync batch (one fsync reserves a batch of rows). smtp-source
# only sends. Both reuse their connections (smtp-source -d).
#
# Environment (defaults in brackets):
#   COUNT [20000]        messages per run on loopback
#   DELAY_COUNT [2000]   messages per run through the delay proxy
#   SIZE [1000]          octets of body per message
#   SESSIONS ["4 16"]    sessions (smtp-source -s, bulkmail --workers)
#   DELAY [10ms]         added in each direction by the proxy ("" or 0: skip)
#   RUNS [3]             runs per cell; the median is printed
#   BENCH_DIR [mktemp]   scratch folder; the journal's fsyncs land here
#
# Needs root only to install Postfix's tools if they are missing (Debian:
# package postfix, installed with its daemon kept from starting). It never
# starts Postfix's daemon: smtp-sink and smtp-source are standalone
# programs. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-20000}
DELAY_COUNT=${DELAY_COUNT:-2000}
SIZE=${SIZE:-1000}
SESSIONS=${SESSIONS:-"4 16"}
DELAY=${DELAY-10ms}
RUNS=${RUNS:-3}
export GOTOOLCHAIN=local

log() { echo "bench: $*" >&2; }

# --- Postfix's tools -------------------------------------------------------
if ! command -v smtp-sink >/dev/null 2>&1 || ! command -v smtp-source >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "smtp-sink/smtp-source missing; install Debian's postfix package (as root) and run again"
    exit 1
  fi
  log "installing postfix (for smtp-sink and smtp-source; its daemon is not started)"
  had_policy=0
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  if [ "$had_policy" = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections || true
  rc=0
  DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
  [ "$rc" = 0 ] && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix || rc=$?; }
  [ "$had_policy" = 0 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || { log "could not install postfix"; exit 1; }
fi
SMTP_SINK=$(command -v smtp-sink)
SMTP_SOURCE=$(command -v smtp-source)

# --- scratch, cleanup --------------------------------------------------------
if [ -n "${BENCH_DIR:-}" ]; then
  mkdir -p "$BENCH_DIR"
  WORK=$(mktemp -d "$BENCH_DIR/bulkmail-bench.XXXXXX")
else
  WORK=$(mktemp -d -t bulkmail-bench.XXXXXX)
fi
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 40000))
}

# --- build --------------------------------------------------------------------
log "building bulkmail and delayproxy into $WORK"
go build -o "$WORK/bulkmail" ./cmd/bulkmail
go build -o "$WORK/delayproxy" ./scripts/delayproxy

# --- smtp-sink ------------------------------------------------------------------
PORT=$(free_port)
sink_args=(-c)
[ "$(id -u)" = 0 ] && sink_args+=(-u nobody)
"$SMTP_SINK" "${sink_args[@]}" "127.0.0.1:$PORT" 1000 >"$WORK/smtp-sink.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.05
done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || { log "smtp-sink did not start:"; cat "$WORK/smtp-sink.out" >&2; exit 1; }
SINK="127.0.0.1:$PORT"
log "smtp-sink on $SINK"

PROXY=""
if [ -n "$DELAY" ] && [ "$DELAY" != 0 ]; then
  "$WORK/delayproxy" -target "$SINK" -delay "$DELAY" >"$WORK/proxy.out" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    PROXY=$(head -n1 "$WORK/proxy.out" 2>/dev/null || true)
    [ -n "$PROXY" ] && break
    sleep 0.05
  done
  [ -n "$PROXY" ] || { log "delayproxy did not start"; exit 1; }
  log "delay proxy on $PROXY ($DELAY each way)"
fi

# --- the list and the template ---------------------------------------------------
# The body is SIZE octets of 72-character lines; smtp-source -l SIZE sends
# SIZE octets of payload after its own few headers.
TEMPLATE="$WORK/bench.tmpl"
{
  printf 'From: Bench <bench@example.com>\nTo: {{.name}} <{{.email}}>\nSubject: Benchmark message for {{.name}}\n\nHello {{.name}},\n'
  awk -v n="$SIZE" 'BEGIN { line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    while (n > 0) { k = (n > 73) ? 72 : n - 1; if (k < 0) k = 0; print substr(line, 1, k); n -= k + 1 } }'
} >"$TEMPLATE"
for n in "$COUNT" "$DELAY_COUNT"; do
  [ -f "$WORK/list-$n.csv" ] || go run scripts/genlist.go -rows "$n" -out "$WORK/list-$n.csv"
done
sample_size=$("$WORK/bulkmail" preview --list "$WORK/list-$COUNT.csv" --template "$TEMPLATE" --limit 1 2>/dev/null | wc -c)

now() { date +%s.%N; }

# rate COUNT START END prints messages per second.
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

run_source() { # target sessions count
  local t0 t1
  t0=$(now)
  "$SMTP_SOURCE" -d -s "$2" -m "$3" -l "$SIZE" -f from@example.org -t to@example.org "$1" >/dev/null
  t1=$(now)
  rate "$3" "$t0" "$t1"
}

run_bulkmail() { # target sessions count run journal-sync
  local dir="$WORK/run-$2-$3-$4-$5-${1//[:.]/_}" t0 t1
  mkdir -p "$dir"
  t0=$(now)
  if ! "$WORK/bulkmail" send --smtp "smtp://$1" --list "$WORK/list-$3.csv" --template "$TEMPLATE" \
    --result "$dir/results.xlsx" --workers "$2" --journal-sync "$5" 2>"$dir/stderr"; then
    log "bulkmail send failed:"; tail -5 "$dir/stderr" >&2; exit 1
  fi
  t1=$(now)
  rm -rf "$dir"
  rate "$3" "$t0" "$t1"
}

# fsync cost where the journal goes: one 200-octet append and fsync, 500 times.
fsync_us=$(cd "$WORK" && dd if=/dev/zero of=fsync.probe bs=200 count=500 oflag=dsync 2>&1 |
  awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) { print int($(i-1) * 1e6 / 500); exit } }')
rm -f "$WORK/fsync.probe"

declare -a table
for s in $SESSIONS; do
  for path in direct delayed; do
    target=$SINK n=$COUNT
    if [ "$path" = delayed ]; then
      [ -n "$PROXY" ] || continue
      target=$PROXY n=$DELAY_COUNT
    fi
    src=() msg=() bat=()
    for r in $(seq "$RUNS"); do
      src+=("$(run_source "$target" "$s" "$n")")
      msg+=("$(run_bulkmail "$target" "$s" "$n" "$r" message)")
      bat+=("$(run_bulkmail "$target" "$s" "$n" "$r" batch)")
      log "sessions=$s $path run $r: smtp-source ${src[-1]}/s, bulkmail ${msg[-1]}/s, with --journal-sync batch ${bat[-1]}/s"
    done
    ms=$(echo "${src[*]}" | median)
    mm=$(echo "${msg[*]}" | median)
    mb=$(echo "${bat[*]}" | median)
    label=$path
    [ "$path" = delayed ] && label="+$DELAY each way"
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
    table+=("$(printf '%-8s %-16s %8s %14s %12s %7s %12s %7s' "$s" "$label" "$n" "$ms" "$mm" "$(ratio "$mm" "$ms")" "$mb" "$(ratio "$mb" "$ms")")")
  done
done

echo
echo "bulkmail send vs smtp-source -d, both to smtp-sink on loopback ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m))"
echo "message: bulkmail ~$sample_size octets rendered, smtp-source $SIZE octets of payload plus its headers; median of $RUNS runs"
echo "journal fsync on $(df -T "$WORK" | awk 'NR == 2 { print $2 }') at $WORK: ~${fsync_us:-?} µs per 200-octet append+fsync (dd oflag=dsync)"
echo
echo "bulkmail: the default, every message's commit and reply fsynced before the worker's next (--journal-sync message); batch: --journal-sync batch"
echo
printf '%-8s %-16s %8s %14s %12s %7s %12s %7s\n' sessions path messages "smtp-source/s" "bulkmail/s" ratio "batch/s" ratio
for line in "${table[@]}"; do echo "$line"; done
