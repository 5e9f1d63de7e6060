#!/usr/bin/env bash
# Real-engine comparison on this machine: stock vLLM (default FCFS scheduler, prefix caching and chunked
# prefill on) versus the same vLLM with the Autellix scheduler plugin. Same model, same engine flags, same
# workload, seed and programs for every engine.
#
#   scripts/bench_real.sh                             # the docs/bench.md mixed sweep (defaults below)
#   PROGRAMS=3 RATES=1 SCALE=0.05 scripts/bench_real.sh   # a quick smoke run
#   POLICIES="vllm plas" RATES=0.3,0.9 scripts/bench_real.sh   # real runs for the simulator check
#
# Fairness (docs/bench.md): the engines run side by side but only one is measured at a time (the bench
# replays targets one after another, alternating their order rate by rate); an idle vLLM engine uses no
# CPU, so the measured engine has the cores to itself. Every run has its own cache salt and program ids.
# Every knob is an environment variable; the engines are stopped on exit (also on Ctrl-C or failure).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
OUT=${OUT:-results/bench_real}
POLICIES=${POLICIES:-vllm autellix}  # engine policies (autellix engine --policy); the first is the baseline
WORKLOAD=${WORKLOAD:-mixed}
RATES=${RATES:-0.1,0.3,0.9}
PROGRAMS=${PROGRAMS:-20,30,80}     # programs per rate (or one N for all): the loaded points need the most
SCALE=${SCALE:-0.1}
SEED=${SEED:-0}
MULTIPLES=${MULTIPLES:-2,1.5,3}     # latency targets, x the baseline's lowest-rate mean; first = headline
MAX_NUM_SEQS=${MAX_NUM_SEQS:-8}
BASE_PORT=${BASE_PORT:-8101}        # engine i listens on BASE_PORT + i
CALIBRATE=${CALIBRATE:-1}           # 1: also measure the baseline engine's step costs for the simulator
PLOT=${PLOT:-$OUT/bench_real.png}
export HF_HUB_OFFLINE=1
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}   # GiB of KV cache per engine, equal for all

mkdir -p "$OUT"
source scripts/engines.sh
port=$BASE_PORT
for policy in $POLICIES; do  # all stay up for the whole sweep
  start_engine "$policy" "$port" --max-num-seqs "$MAX_NUM_SEQS"
  port=$((port + 1))
done

if [[ "$CALIBRATE" == 1 ]]; then
  # Lengths the scaled workload uses (longer prefills take tens of seconds each on 2 cores).
  "$BIN/autellix" calibrate --target "http://127.0.0.1:$BASE_PORT" --out "$OUT/calibration.json" \
    --batches "1,2,4,$MAX_NUM_SEQS" --prefill-lengths 16,64,256,1024,2048 --contexts 128,1024
fi

"$BIN/autellix" bench --workload "$WORKLOAD" "${TARGETS[@]}" \
  --rates "$RATES" --programs "$PROGRAMS" --seed "$SEED" --scale "$SCALE" \
  --latency-multiples "$MULTIPLES" --json "$OUT/bench_real.json" --plot "$PLOT"
