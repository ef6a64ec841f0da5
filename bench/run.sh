#!/usr/bin/env bash
# flowrun's benchmark suite (issue 8). Usage: bench/run.sh [--quick]
#
#  1. w3 wall time, interleaved: `flowrun run bench/w3.json`, the same three steps hand-written
#     (bench/baseline_w3.py with the same interpreter and flags), and the naive way (the generated
#     script run with `python3` from PATH: a pyenv shim, with site). Medians and ratios.
#  2. The runner's own peak RSS for w3 and under a 1 GiB stdout flood (bench/flood.json).
#  3. Throughput: N executions of w3 in sequence and 4 at a time; then no leaked process and
#     no temp file left. The fan-out example (for_each over 4 LLM calls against a stand-in that
#     takes 300 ms per answer) one item at a time and four at a time. 3c: `flowrun test` of 100
#     cases of the examples, -j 1 and -j 4, warm and cold; and 100 cases of hello.json, warm
#     and cold.
#  4. The divan micro-benchmarks (bench/protocol.rs, bench/codegen.rs, bench/store.rs).
#  5, 6. Warm starts through `flowrun serve`, and cold `flowrun run` under a CPU hog (bench/warm.sh).
#
# --quick: fewer runs, 100 executions, a 64 MiB flood instead of 1 GiB, no micro-benchmarks
# (about 15 s once built). Results (JSON, raw output, summary.txt) go to target/bench/.
set -euo pipefail

QUICK=0
case "${1:-}" in
  --quick) QUICK=1 ;;
  "") ;;
  *) echo "usage: bench/run.sh [--quick]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
section() { echo; echo "== $* =="; }

if [ "$QUICK" = 1 ]; then
  ROUNDS=3 RUNS=8 WARMUP=3 RSS_RUNS=10 EXECS=100 FLOOD_MIB=64
else
  ROUNDS=5 RUNS=30 WARMUP=5 RSS_RUNS=30 EXECS=500 FLOOD_MIB=1024
fi

# --- tools ------------------------------------------------------------------------------------
need_apt=()
command -v hyperfine >/dev/null || need_apt+=(hyperfine)
[ -x /usr/bin/time ] || need_apt+=(time)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt-get)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

section "build"
cargo build --release --quiet
FLOWRUN=$ROOT/target/release/flowrun

# The real interpreter behind `python3` on PATH (a pyenv shim resolves to its binary).
PY=$(python3 -c 'import sys; print(sys.executable)')
PYVER=$("$PY" -c 'import sys; print(sys.version.split()[0])')
TOOLS=("$PY" -I -S "$ROOT/bench/tools.py")

WORK=$(mktemp -d -t flowrun-bench.XXXXXX)
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
export FLOWRUN_DB=$WORK/db/flowrun.db
export FLOWRUN_CACHE_DIR=$WORK/cache
PRIVTMP=$WORK/tmp # TMPDIR of every flowrun run below: must stay empty
mkdir -p "$PRIVTMP"

say "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)   flowrun $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty')"
say "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
say "python:  $PY ($PYVER); naive: $(command -v python3) (with site)"
say "tools:   $(hyperfine --version)"

# Warm the caches once (interpreter discovery, script + .pyc) and check it all works.
TMPDIR=$PRIVTMP "$FLOWRUN" run bench/w3.json <bench/trigger.json >/dev/null 2>&1
"$FLOWRUN" codegen bench/w3.json -o "$WORK/w3_script.py" >/dev/null 2>&1
"$PY" -I -S bench/baseline_w3.py <bench/trigger.json >/dev/null
python3 "$WORK/w3_script.py" <bench/trigger.json >/dev/null

# --- 1. wall time ---------------------------------------------------------------------------
section "w3 wall time: $ROUNDS interleaved rounds x $RUNS runs per command"
# hyperfine 1.15 runs all runs of one command before the next; alternating rounds spreads the
# drift of a busy machine over the three commands alike.
rounds=()
for r in $(seq "$ROUNDS"); do
  f=$OUT/hyperfine-w3-round$r.json
  TMPDIR=$PRIVTMP hyperfine --style none --warmup "$WARMUP" --runs "$RUNS" --export-json "$f" \
    -n flowrun "$FLOWRUN run bench/w3.json < bench/trigger.json" \
    -n baseline "$PY -I -S bench/baseline_w3.py < bench/trigger.json" \
    -n naive "python3 $WORK/w3_script.py < bench/trigger.json" >/dev/null
  rounds+=("$f")
  echo "  round $r/$ROUNDS done"
done
"${TOOLS[@]}" hyperfine "$OUT/hyperfine-w3.json" "${rounds[@]}" | tee -a "$SUMMARY"

# --- 2. peak RSS ------------------------------------------------------------------------------
section "runner peak RSS"
# VmHWM of the flowrun process itself, polled from /proc until it exits (it only grows, so the
# last value read is the peak up to a fraction of a millisecond before exit).
rss=$(TMPDIR=$PRIVTMP "${TOOLS[@]}" peak-rss "$RSS_RUNS" bench/trigger.json -- "$FLOWRUN" run bench/w3.json)
echo "$rss" >"$OUT/rss-w3.json"
med=$(echo "$rss" | "$PY" -I -S -c 'import json,sys; print(json.load(sys.stdin)["median_mib"])')
max=$(echo "$rss" | "$PY" -I -S -c 'import json,sys; print(json.load(sys.stdin)["max_mib"])')
ok=$(awk -v m="$max" 'BEGIN { print (m <= 20) ? "PASS" : "MISS" }')
say "  w3, flowrun's own VmHWM over $RSS_RUNS runs: median $med MiB, max $max MiB (target <= 20 MB)  $ok"
# For comparison: /usr/bin/time reports the max over the process and its waited-for children,
# i.e. max(flowrun, python child).
tv=$(TMPDIR=$PRIVTMP /usr/bin/time -v "$FLOWRUN" run bench/w3.json <bench/trigger.json 2>&1 >/dev/null |
  awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}')
child=$(/usr/bin/time -v "$PY" -I -S -u "$WORK/w3_script.py" <bench/trigger.json 2>&1 >/dev/null |
  awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}')
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
say "  for comparison, /usr/bin/time -v: \`flowrun run\` $(mib "$tv") MiB (the max of flowrun and its python child), the script alone under $PY -I -S -u $(mib "$child") MiB"

section "stdout flood: $FLOOD_MIB MiB"
frss=$(TMPDIR=$PRIVTMP "${TOOLS[@]}" peak-rss 1 /dev/null -- "$FLOWRUN" run bench/flood.json --input "{\"mib\": $FLOOD_MIB}")
echo "$frss" >"$OUT/rss-flood.json"
fmax=$(echo "$frss" | "$PY" -I -S -c 'import json,sys; print(json.load(sys.stdin)["max_mib"])')
fwall=$(echo "$frss" | "$PY" -I -S -c 'import json,sys; print(json.load(sys.stdin)["median_wall_s"])')
ok=$(awk -v m="$fmax" 'BEGIN { print (m <= 40) ? "PASS" : "MISS" }')
rate=$(awk -v w="$fwall" -v n="$FLOOD_MIB" 'BEGIN { printf "%.0f", n * 1.048576 / w }')
say "  flood of $FLOOD_MIB MiB: flowrun's own VmHWM $fmax MiB (target <= 40 MB)  $ok; took $fwall s ($rate MB/s end to end)"

# --- 3. throughput ----------------------------------------------------------------------------
section "throughput: $EXECS executions of w3, in sequence and 4 at a time"
count_success() {
  "$FLOWRUN" history --workflow w3 --status success -n 1000000 --json | "${TOOLS[@]}" count-success | cut -d' ' -f1
}
before=$(count_success)
t0=$(date +%s.%N)
for _ in $(seq "$EXECS"); do
  TMPDIR=$PRIVTMP "$FLOWRUN" run bench/w3.json <bench/trigger.json >/dev/null 2>&1
done
t1=$(date +%s.%N)
seq "$EXECS" | TMPDIR=$PRIVTMP xargs -P4 -n1 sh -c 'exec "$0" run bench/w3.json < bench/trigger.json > /dev/null 2>&1' "$FLOWRUN"
t2=$(date +%s.%N)
after=$(count_success)
seq_rate=$(awk -v a="$t0" -v b="$t1" -v n="$EXECS" 'BEGIN { printf "%.1f", n / (b - a) }')
par_rate=$(awk -v a="$t1" -v b="$t2" -v n="$EXECS" 'BEGIN { printf "%.1f", n / (b - a) }')
say "  in sequence: $seq_rate executions/s;  4 at a time: $par_rate executions/s ($(nproc) cores)"
recorded=$((after - before))
[ "$recorded" = $((2 * EXECS)) ] && ok=PASS || ok=MISS
say "  recorded as success in the store: $recorded of $((2 * EXECS))  $ok"
# The python children run the cached script under $WORK; our runners are the "$FLOWRUN run"
# processes with this FLOWRUN_DB (other flowrun processes on the machine are not ours).
leaked=$(
  pgrep -af -- "$WORK" || true
  for pid in $(pgrep -f -- "$FLOWRUN run" || true); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "FLOWRUN_DB=$FLOWRUN_DB"; then
      echo "$pid $(tr '\0' ' ' <"/proc/$pid/cmdline")"
    fi
  done
)
[ -z "$leaked" ] && ok=PASS || ok=MISS
say "  leaked processes (pgrep -f for the scripts' directory and for '$FLOWRUN run'): ${leaked:-none}  $ok"
left=$(find "$PRIVTMP" -mindepth 1 | head -5)
[ -z "$left" ] && ok=PASS || ok=MISS
say "  files left in the runs' private TMPDIR: ${left:-none}  $ok"
say "  open descriptors: n/a: each \`flowrun run\` is its own short process (no long-lived runner in this mode); all its fds end with it"

# --- 3b. orchestration ---------------------------------------------------------------------------
section "fan-out: examples/fanout.yaml, 4 topics, a stand-in model taking 300 ms per answer"
STANDIN_PORT=$("$PY" -I -S -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PY" -I -S "$ROOT/examples/llm_standin.py" "$STANDIN_PORT" 300 2>/dev/null &
STANDIN=$!
sleep 0.3
# max_parallel 1 with one item at a time, against max_parallel 4 with four items at a time.
sed 's/max_concurrent: 3/max_concurrent: 1/' examples/fanout.yaml >"$WORK/fanout-1.yaml"
sed 's/max_concurrent: 3/max_concurrent: 4/' examples/fanout.yaml >"$WORK/fanout-4.yaml"
FAN_RUNS=$([ "$QUICK" = 1 ] && echo 3 || echo 10)
FLOWRUN_GROQ_BASE_URL=http://127.0.0.1:$STANDIN_PORT/openai/v1 GROQ_API_KEY=bench-not-a-key \
  TMPDIR=$PRIVTMP hyperfine -N --warmup 1 --runs "$FAN_RUNS" --export-json "$OUT/fanout.json" \
  "$FLOWRUN run $WORK/fanout-1.yaml --max-parallel 1" \
  "$FLOWRUN run $WORK/fanout-4.yaml --max-parallel 4" >/dev/null
kill "$STANDIN" 2>/dev/null || true
read -r fan1 fan4 < <("$PY" -I -S -c '
import json, statistics, sys
r = json.load(open(sys.argv[1]))["results"]
print(*("%.0f" % (statistics.median(x["times"]) * 1000) for x in r))' "$OUT/fanout.json")
say "  fan-out of 4 LLM calls: max_parallel 1 (items one by one) $fan1 ms, max_parallel 4 (4 items at once) $fan4 ms ($(awk -v a="$fan1" -v b="$fan4" 'BEGIN { printf "%.1f", a / b }')x)"
# --- 3c. flowrun test ----------------------------------------------------------------------------
section "flowrun test: 100 cases of the examples, -j 1 and -j 4, warm (the default) and --cold"
# Copies of examples/ and hello.json cases to make exactly 100, offline, models and agents mocked.
PER_COPY=$(TMPDIR=$PRIVTMP "$FLOWRUN" test examples --offline 2>/dev/null | tail -1 | awk '{ print $1 }')
COPIES=$((100 / PER_COPY))
EXTRA=$((100 - COPIES * PER_COPY))
SUITE=$WORK/suite
for i in $(seq "$COPIES"); do
  mkdir -p "$SUITE/c$i"
  cp -r examples/. "$SUITE/c$i/"
done
if [ "$EXTRA" -gt 0 ]; then
  printf 'workflow: ./hello.json\ncases:\n' >"$SUITE/c1/extra.test.yaml"
  for k in $(seq "$EXTRA"); do
    printf '  - name: extra %s\n    expect: { status: success }\n' "$k" >>"$SUITE/c1/extra.test.yaml"
  done
fi
TMPDIR=$PRIVTMP "$FLOWRUN" test "$SUITE" --offline -j 4 >"$OUT/test-suite.txt" 2>&1 # scripts cached once
tail -1 "$OUT/test-suite.txt" | grep -qx '100 passed, 0 failed' && ok=PASS || ok=MISS
TMPDIR=$PRIVTMP hyperfine --style none --warmup 0 --runs "$ROUNDS" --export-json "$OUT/hyperfine-test.json" \
  -n "test -j 1" "$FLOWRUN test $SUITE --offline -j 1" \
  -n "test -j 4" "$FLOWRUN test $SUITE --offline -j 4" \
  -n "test -j 1 --cold" "$FLOWRUN test $SUITE --offline -j 1 --cold" \
  -n "test -j 4 --cold" "$FLOWRUN test $SUITE --offline -j 4 --cold" >/dev/null
"$PY" -I -S -c '
import json, statistics, sys
r = {x["command"]: x["times"] for x in json.load(open(sys.argv[1]))["results"]}
for how in ("", " --cold"):
    one, four = statistics.median(r["test -j 1" + how]), statistics.median(r["test -j 4" + how])
    print("  %-5s -j 1: %.2f s, -j 4: %.2f s (medians of %d; %.1f and %.1f cases/s; -j 4 is %.2fx faster)"
          % (how.strip(" -") or "warm", one, four, len(r["test -j 1"]), 100 / one, 100 / four, one / four))
w, c = statistics.median(r["test -j 1"]), statistics.median(r["test -j 1 --cold"])
print("  warm vs cold, -j 1: %.1fx (target >= 5x: %s)" % (c / w, "PASS" if c / w >= 5 else "MISS"))
' "$OUT/hyperfine-test.json" | tee -a "$SUMMARY"
say "  100 cases passed: $ok"
# The examples' cases include work no start can shorten (a `command` node running a project's
# unit tests, sub-workflows whose children start their own interpreter): the same comparison on
# 100 cases of one plain workflow (hello.json) shows what the start itself costs.
PLAIN=$WORK/plain
mkdir -p "$PLAIN"
cp examples/hello.json "$PLAIN/"
{
  printf 'workflow: ./hello.json\ncases:\n'
  for k in $(seq 100); do
    printf '  - name: case %s\n    trigger: { name: "n%s" }\n    expect: { status: success }\n' "$k" "$k"
  done
} >"$PLAIN/hello.test.yaml"
TMPDIR=$PRIVTMP "$FLOWRUN" test "$PLAIN" --offline >/dev/null 2>&1 # script cached once
TMPDIR=$PRIVTMP hyperfine --style none --warmup 1 --runs "$ROUNDS" --export-json "$OUT/hyperfine-test-plain.json" \
  -n "warm" "$FLOWRUN test $PLAIN --offline -j 1" \
  -n "cold" "$FLOWRUN test $PLAIN --offline -j 1 --cold" >/dev/null
"$PY" -I -S -c '
import json, statistics, sys
r = {x["command"]: statistics.median(x["times"]) for x in json.load(open(sys.argv[1]))["results"]}
print("  100 cases of hello.json, -j 1: warm %.2f s, cold %.2f s (%.1f and %.1f ms a case): warm vs cold %.1fx (target >= 5x: %s)"
      % (r["warm"], r["cold"], r["warm"] * 10, r["cold"] * 10, r["cold"] / r["warm"], "PASS" if r["cold"] / r["warm"] >= 5 else "MISS"))
' "$OUT/hyperfine-test-plain.json" | tee -a "$SUMMARY"
# The floor under a warm case, in the same minutes: a fork of an interpreter holding hello.json
# prepared, running it with nothing around it (bench/fork_floor.py); a case also has the template
# supervise it and the runner check and record it. Cold per case over the floor is a ratio no warm
# start reaches here now.
"$FLOWRUN" codegen examples/hello.json -o "$WORK/hello-floor.py" >/dev/null
printf '{"name": "n1", "excited": true}' >"$WORK/hello-trigger.json" # its inputs' defaults applied
"$PY" -I -S bench/fork_floor.py 300 "$OUT/floor-hello.json" "$WORK/hello-floor.py" "$WORK/hello-trigger.json" >/dev/null
"$PY" -I -S -c '
import json, statistics, sys
r = {x["command"]: statistics.median(x["times"]) for x in json.load(open(sys.argv[1]))["results"]}
f = json.load(open(sys.argv[2]))
run = statistics.median(f["run_ms"])
print("  floor: fork and run hello.json %.2f ms (%.2f ms of CPU); a cold case over it: %.1fx, the most a warm start could gain here now; a warm case is %.2f ms above it"
      % (run, f["cpu_ms"]["run"], r["cold"] * 10 / run, r["warm"] * 10 - run))
' "$OUT/hyperfine-test-plain.json" "$OUT/floor-hello.json" | tee -a "$SUMMARY"

# --- 5, 6. warm starts through serve; cold run under load ----------------------------------------
# shellcheck source=bench/warm.sh
. bench/warm.sh

# --- 4. micro-benchmarks ------------------------------------------------------------------------
if [ "$QUICK" = 0 ]; then
  section "micro-benchmarks (divan)"
  cargo bench --quiet --bench protocol --bench codegen --bench store 2>&1 | tee "$OUT/divan.txt"
  echo
  "${TOOLS[@]}" divan "$OUT/divan.json" "$OUT/divan.txt" | tee -a "$SUMMARY"
fi

section "summary (also in target/bench/summary.txt)"
cat "$SUMMARY"
