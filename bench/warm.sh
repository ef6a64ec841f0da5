# Warm starts and the cold path under load (issue 18); sourced by bench/run.sh, which defines
# FLOWRUN, PY, TOOLS, WORK, OUT, PRIVTMP, ROUNDS, RUNS, WARMUP, EXECS, say and section.
#
#  5. w3 through `flowrun serve`: POST /api/workflows/w3/executions?wait=true, one after another
#     on one kept-alive connection, warm (the default) and `--cold`: medians and p99 end to end,
#     and the execution's own duration as recorded (spawn to end, the child's part); and the
#     floor under it, measured in the same minutes (bench/fork_floor.py).
#  6. `flowrun run` against the hand-written baseline, idle and with a CPU hog on every core.

serve_rows() { # serve_rows LABEL [serve flags]
  local label=$1; shift
  local dir=$WORK/serve-$label
  mkdir -p "$dir/wfs"
  cp bench/w3.json "$dir/wfs/"
  (cd "$dir" && TMPDIR=$PRIVTMP exec "$FLOWRUN" serve --port 0 --workflows wfs "$@" >serve.out 2>serve.err) &
  local pid=$!
  for _ in $(seq 100); do
    [ -s "$dir/serve.out" ] && [ "$(wc -l <"$dir/serve.out")" -ge 2 ] && break
    sleep 0.1
  done
  local url token
  url=$(head -1 "$dir/serve.out" | sed 's/.*listening on //')
  token=$(cat "$(sed -n 2p "$dir/serve.out" | sed 's/token file: //')")
  local line
  line=$("$PY" -I -S bench/serve_load.py "$url" "$token" w3 "$EXECS" bench/trigger.json "$OUT/serve-$label.json")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  say "  $label: $line"
}

section "w3 through flowrun serve: $EXECS executions with ?wait=true, one at a time"
serve_rows warm
serve_rows cold --cold
# The floor, in the same minutes: a fork of an interpreter holding w3 prepared, running it with
# nothing around it (bench/fork_floor.py).
"$FLOWRUN" codegen bench/w3.json -o "$WORK/w3-floor.py" >/dev/null
say "  floor: $("$PY" -I -S bench/fork_floor.py "$EXECS" "$OUT/floor-w3.json" "$WORK/w3-floor.py" bench/trigger.json)"
"$PY" -I -S -c '
import json, statistics, sys
w = json.load(open(sys.argv[1])); c = json.load(open(sys.argv[2])); f = json.load(open(sys.argv[3]))
mw, mc = statistics.median(w["http_ms"]), statistics.median(c["http_ms"])
xw, fw = statistics.median(w["exec_ms"]), statistics.median(f["run_ms"])
print("  warm vs cold end to end: %.1fx; the execution %.2f ms, the floor %.2f ms; targets: warm <= 5 ms median end to end %s, <= 3 ms the execution %s"
      % (mc / mw, xw, fw, "PASS" if mw <= 5 else "MISS", "PASS" if xw <= 3 else "MISS"))
' "$OUT/serve-warm.json" "$OUT/serve-cold.json" "$OUT/floor-w3.json" | tee -a "$SUMMARY"

section "flowrun run under load: $((RUNS < 30 ? 30 : RUNS)) runs each, alternated, idle and with $(nproc) busy loops"
load_rows() { # load_rows LABEL
  # Alternated run by run (bench/tools.py alternate): under a hog, the share the scheduler gives
  # a new process swings from run to run by 2-3x (the baseline alone: 15 to 41 ms medians of 20
  # consecutive runs), which consecutive blocks of runs would read as a difference between the
  # commands.
  # At least 30 of each, --quick too: 8 alternated runs gave 1.57x once where 30 give 1.29x.
  TMPDIR=$PRIVTMP "${TOOLS[@]}" alternate "$((RUNS < 30 ? 30 : RUNS))" bench/trigger.json "$OUT/load-$1.json" \
    -- "$FLOWRUN" run bench/w3.json -- "$PY" -I -S bench/baseline_w3.py
  "$PY" -I -S -c '
import json, statistics, sys
r = json.load(open(sys.argv[1]))
f, b = statistics.median(r["a"]) * 1000, statistics.median(r["b"]) * 1000
print("  %-5s flowrun run %.1f ms, baseline %.1f ms: %.2fx (target <= 1.3x: %s), runner overhead %.1f ms"
      % (sys.argv[2], f, b, f / b, "PASS" if f / b <= 1.3 else "MISS", f - b))
' "$OUT/load-$1.json" "$1" | tee -a "$SUMMARY"
  # What early starts (docs/design.md, "Early starts") are worth here: the same binary with
  # them off, alternated with the default.
  TMPDIR=$PRIVTMP "${TOOLS[@]}" alternate "$((RUNS < 30 ? 30 : RUNS))" bench/trigger.json "$OUT/load-$1-early.json" \
    -- env FLOWRUN_EARLY_START=0 "$FLOWRUN" run bench/w3.json -- "$FLOWRUN" run bench/w3.json
  "$PY" -I -S -c '
import json, statistics, sys
r = json.load(open(sys.argv[1]))
off, on = statistics.median(r["a"]) * 1000, statistics.median(r["b"]) * 1000
print("  %-5s early starts off / on (information): %.1f / %.1f ms" % (sys.argv[2], off, on))
' "$OUT/load-$1-early.json" "$1" | tee -a "$SUMMARY"
}
load_rows idle
hogs=()
for _ in $(seq "$(nproc)"); do
  "$PY" -I -S -c 'while True: pass' &
  hogs+=($!)
done
load_rows hog
kill "${hogs[@]}"
wait "${hogs[@]}" 2>/dev/null || true
