#!/usr/bin/env bash
# Closed-loop agent fleets on real engines: stock vLLM (prefix caching on), the peers' published rules
# (continuum: its pins in the plugin; thunderagent: the gateway's pause gate in front of stock vLLM) and
# the Autellix plugin (holds, the program gate, evict-first), each one engine behind its own `autellix
# serve` gateway (so the gateway's cost is the same for all), same model and engine flags, on the coding
# workload (real mini-swe-agent sessions) at a context scale and a KV cache chosen so the cache holds 4
# programs' full histories; then 4 programs in flight (1x residency) and 16 (4x). With CALIBRATE=1 it
# also calibrates the simulator on the baseline engine and prints its prediction beside the real run.
#
#   scripts/bench_fleet_real.sh                                   # the docs/bench.md run
#   CONCURRENCY=2 PROGRAMS=3 REPEATS=1 scripts/bench_fleet_real.sh # a quick smoke run
#
# The KV cache is set in blocks (--num-gpu-blocks-override; VLLM_CPU_KVCACHE_SPACE only takes whole GiB,
# ~46k tokens of SmolLM2, far more than this workload's scale needs) with 32-token blocks, so a history of
# a few hundred tokens spans many full (cacheable) blocks. Fairness as in bench_real.sh: engines side by
# side, one measured at a time, interleaved in alternating order, every run and every program with its own
# cache salt (docs/bench.md, "Closed-loop fleets").
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
OUT=${OUT:-results/bench_fleet_real}
POLICIES=${POLICIES:-vllm continuum thunderagent autellix}   # the first is the baseline
SCALE=${SCALE:-0.05}                  # coding at 5%: full histories of ~570 tokens, 24 calls a program
BLOCKS=${BLOCKS:-72}                  # x 32 tokens = 2,304 tokens: 4.0 programs' full histories (570 tokens)
CONCURRENCY=${CONCURRENCY:-4,16}      # 1x and 4x the cache's residency
PROGRAMS=${PROGRAMS:-12}              # completions per point (the first 20% are warm-up)
REPEATS=${REPEATS:-2}
MAX_NUM_SEQS=${MAX_NUM_SEQS:-16}
SEED=${SEED:-0}
BASE_PORT=${BASE_PORT:-8121}
CALIBRATE=${CALIBRATE:-1}             # 1: also measure the engine's step costs for the simulator check
export HF_HUB_OFFLINE=1

mkdir -p "$OUT"
source scripts/engines.sh
port=$BASE_PORT
for policy in $POLICIES; do
  start_system "$policy" "$port" --max-num-seqs "$MAX_NUM_SEQS" -- --block-size 32 \
    --num-gpu-blocks-override "$BLOCKS" --max-model-len 2048 --enable-prompt-tokens-details
  port=$((port + 2))
done

if [[ "$CALIBRATE" == 1 ]]; then  # the baseline's engine itself (its port is its gateway's + 1)
  "$BIN/autellix" calibrate --target "http://127.0.0.1:$((BASE_PORT + 1))" --out "$OUT/calibration.json" \
    --batches "1,4,$MAX_NUM_SEQS" --prefill-lengths 16,64,256,512,1024 --contexts 128,512
fi

"$BIN/autellix" bench --workload coding "${TARGETS[@]}" --concurrency "$CONCURRENCY" \
  --programs "$PROGRAMS" --repeats "$REPEATS" --seed "$SEED" --scale "$SCALE" \
  --json "$OUT/bench_fleet_real.json" --plot "$OUT/bench_fleet_real.png"

if [[ "$CALIBRATE" == 1 ]]; then  # the simulator's prediction of the same fleets, with this engine's costs
  "$BIN/autellix" sim --workload coding --policy "$(echo $POLICIES | tr ' ' ',' | sed 's/\bvllm\b/fcfs/')" --concurrency "$CONCURRENCY" \
    --programs "$PROGRAMS" --scale "$SCALE" --seed "$SEED" --calibration "$OUT/calibration.json" \
    --model SmolLM2-135M-Instruct --max-num-seqs "$MAX_NUM_SEQS" --max-batched-tokens 2048 --swap recompute \
    --json "$OUT/sim.json" --quiet
  "$BIN/python" scripts/fleet_sim_check.py "$OUT/bench_fleet_real.json" "$OUT/sim.json" --plot "$OUT/sim_check.png"
fi
