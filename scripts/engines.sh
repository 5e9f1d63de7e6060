# Sourced by the real-engine benchmark scripts: start engines one at a time, wait until healthy, and stop
# them all on exit (also on Ctrl-C or failure). Needs BIN and OUT set; fills TARGETS with --target flags.
PIDS=()
TARGETS=()

cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true   # each engine is its own process group (setsid)
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

wait_healthy() {  # port pid
  for _ in $(seq 600); do
    if curl -sf "http://127.0.0.1:$1/health" >/dev/null; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then echo "engine on port $1 exited; see its log in $OUT" >&2; exit 1; fi
    sleep 1
  done
  echo "engine on port $1 not healthy after 600 s" >&2; exit 1
}

start_engine() {  # policy port [autellix engine arguments...]: one at a time (startup is CPU-heavy)
  local policy=$1 port=$2
  shift 2
  setsid "$BIN/autellix" engine --policy "$policy" --port "$port" "$@" >"$OUT/engine-$policy.log" 2>&1 &
  PIDS+=("$!")
  echo "starting $policy engine on port $port (pid $!, log $OUT/engine-$policy.log)" >&2
  wait_healthy "$port" "$!"
  # Evidence for the fairness claim: vLLM logs every non-default engine argument.
  grep -h "non-default args" "$OUT/engine-$policy.log" | sed 's/^.*non-default args/  non-default args/' >&2 || true
  TARGETS+=(--target "$policy=http://127.0.0.1:$port")
}

start_system() {  # policy gateway_port [autellix serve arguments...]: one engine behind its own gateway
  local policy=$1 port=$2
  shift 2
  setsid "$BIN/autellix" serve --engines 1 --policy "$policy" --port "$port" --engine-port "$((port + 1))" \
    --log-dir "$OUT/logs-$policy" "$@" >"$OUT/serve-$policy.log" 2>&1 &
  PIDS+=("$!")
  echo "starting $policy (gateway on port $port, engine on $((port + 1)), pid $!, log $OUT/serve-$policy.log)" >&2
  wait_healthy "$port" "$!"
  grep -h "non-default args" "$OUT/logs-$policy"/*.log | sed 's/^.*non-default args/  non-default args/' >&2 || true
  TARGETS+=(--target "$policy=http://127.0.0.1:$port")
}
