#!/usr/bin/env bash
# Interactive and batch agents on one fleet, on real engines (docs/bench.md, "Interactive and batch"): a
# closed-loop batch fleet of coding agents at 3x the KV cache's residency and, once it has turned over,
# an open-loop stream of interactive coding sessions beside it; each class's figures (batch programs/h,
# interactive completion time and time to first token). Systems and engines as in bench_fleet_real.sh:
# stock vLLM, continuum (its pins in the plugin), thunderagent (the gateway's pause gate in front of stock
# vLLM) and autellix, each one engine behind its own `autellix serve` gateway, same model and engine
# flags. The fleet's calls send `x-autellix-class: batch`; the interactive ones name no class.
#
#   scripts/bench_mix_real.sh                               # the docs/bench.md run (8 runs of ~12 min)
#   CHECK=1 scripts/bench_mix_real.sh                       # print the commands, parse the bench's; start nothing
#   INTERACTIVE_PROGRAMS=2 REPEATS=1 POLICIES="vllm autellix" scripts/bench_mix_real.sh   # a quick smoke run
#
# The stock engines (vllm, thunderagent) run vLLM's priority scheduler (`--scheduling-policy priority`),
# as the simulator's `fcfs` is given the class (docs/simulator.md, "Interactive and batch"); the plugin's
# engines set it themselves (autellix.deploy.launch.engine_argv). The gateway turns a batch program's class
# into vLLM's `priority` 1 for stock engines (docs/gateway.md, "Classes").
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
OUT=${OUT:-results/bench_mix_real}
POLICIES=${POLICIES:-vllm continuum thunderagent autellix}   # the first is the baseline
SCALE=${SCALE:-0.05}                  # coding at 5%: full histories of ~570 tokens, 24 calls a program
BLOCKS=${BLOCKS:-72}                  # x 32 tokens = 2,304 tokens: 4.0 programs' full histories
CONCURRENCY=${CONCURRENCY:-12}        # the batch fleet: 3x the cache's residency
PROGRAMS=${PROGRAMS:-200}             # fleet programs drawn beyond the first N: a bound, not a target
                                      # (a run ends with the stream; too few and the bench says so)
INTERACTIVE=${INTERACTIVE:-coding}
INTERACTIVE_RATE=${INTERACTIVE_RATE:-0.02}        # programs/s: one every 50 s on average
INTERACTIVE_PROGRAMS=${INTERACTIVE_PROGRAMS:-8}   # per run: ~400 s of arrivals
REPEATS=${REPEATS:-2}
MAX_NUM_SEQS=${MAX_NUM_SEQS:-16}
SEED=${SEED:-0}
BASE_PORT=${BASE_PORT:-8141}
CHECK=${CHECK:-0}
export HF_HUB_OFFLINE=1

ENGINE_FLAGS=(--block-size 32 --num-gpu-blocks-override "$BLOCKS" --max-model-len 2048
              --enable-prompt-tokens-details)

stock_flags() {  # policy: the engine flags only a stock engine needs (the plugin sets them itself)
  case $1 in
    vllm|thunderagent) echo "--scheduling-policy priority" ;;
  esac
}

BENCH_ARGS=(--workload coding --concurrency "$CONCURRENCY" --programs "$PROGRAMS" --repeats "$REPEATS"
            --seed "$SEED" --scale "$SCALE" --interactive "$INTERACTIVE"
            --interactive-rate "$INTERACTIVE_RATE" --interactive-programs "$INTERACTIVE_PROGRAMS"
            --json "$OUT/bench_mix_real.json" --plot "$OUT/bench_mix_real.png")

if [[ "$CHECK" == 1 ]]; then
  port=$BASE_PORT
  for policy in $POLICIES; do
    # shellcheck disable=SC2046  # stock_flags prints words meant to be split
    echo "$BIN/autellix serve --policy $policy --port $port --max-num-seqs $MAX_NUM_SEQS --" \
      "${ENGINE_FLAGS[@]}" $(stock_flags "$policy")
    port=$((port + 2))
  done
  echo "$BIN/autellix bench ${BENCH_ARGS[*]} --target ..."
  "$BIN/python" -c 'import sys
from autellix.cli import parse_args
a = parse_args(sys.argv[1:])
print(f"parses: concurrency {a.concurrency}, programs {a.programs}, interactive {a.interactive} at "
      f"{a.interactive_rate}/s x {a.interactive_programs}, repeats {a.repeats}, scale {a.scale}")' \
    bench "${BENCH_ARGS[@]}" --target check=http://127.0.0.1:1
  exit 0
fi

mkdir -p "$OUT"
source scripts/engines.sh
port=$BASE_PORT
for policy in $POLICIES; do
  # shellcheck disable=SC2046
  start_system "$policy" "$port" --max-num-seqs "$MAX_NUM_SEQS" -- "${ENGINE_FLAGS[@]}" $(stock_flags "$policy")
  port=$((port + 2))
done

"$BIN/autellix" bench "${TARGETS[@]}" "${BENCH_ARGS[@]}"
