#!/usr/bin/env bash
# KV residency in the simulator (docs/simulator.md, "KV residency"): closed-loop coding fleets, the open
# loop at a cache-bound scale, the Mooncake trace, the no-regression check, and the sticky balancer.
# H200 preset, Llama-3.1-8B, seed 0. About 15 minutes on 2 cores. Results: docs/results/residency_*.json,
# plots: docs/img/residency_*.png.
set -euo pipefail
cd "$(dirname "$0")/.."
SIM="${SIM:-.venv/bin/autellix sim --quiet --jobs ${JOBS:-2}}"
R=docs/results; I=docs/img
PEERS=fcfs,autellix,autellix-lru,continuum,thunderagent
# Closed loop: coding at 4x and 2x its recorded token counts; the cache holds ~19 / ~36 full histories.
$SIM --workload coding --scale 4 --concurrency 19,38,57,76 --programs 1000 --policy $PEERS \
  --baselines fcfs,thunderagent,continuum --json $R/residency_fleet_x4.json --plot $I/residency_fleet_x4.png
$SIM --workload coding --scale 2 --concurrency 36,72,108,144 --programs 1000 --policy $PEERS \
  --baselines fcfs,thunderagent,continuum --json $R/residency_fleet_x2.json --plot $I/residency_fleet_x2.png
# Open loop, same workload, cache-bound scale: sustained capacity.
$SIM --workload coding --scale 4 --rates 0.03,0.04,0.045,0.05,0.055,0.06 --programs 1000 \
  --policy fcfs,autellix,continuum,thunderagent --baselines fcfs \
  --json $R/residency_open_x4.json --plot $I/residency_open_x4.png
# The Mooncake conversation trace at its own (bursty) arrival times, and its conversations as Poisson arrivals.
$SIM --workload mooncake-trace --rates 0.25,0.5,0.75,1 --programs 1500 --policy fcfs,autellix,autellix-lru,srpt \
  --baselines fcfs --json $R/residency_mooncake_trace.json
$SIM --workload mooncake --rates 1,2,4,6 --programs 1500 --policy fcfs,autellix,autellix-lru,srpt \
  --baselines fcfs --json $R/residency_mooncake.json
# No regression: the README's sustained ratios with residency on (autellix) and off (autellix-lru).
$SIM --workload chat --rates 2.75,3,3.25,3.5 --programs 4000 --policy fcfs,autellix,autellix-lru \
  --baselines fcfs --json $R/residency_noreg_chat.json
$SIM --workload tree --rates 0.6,0.65,0.7,0.75 --programs 1000 --policy fcfs,autellix,autellix-lru \
  --baselines fcfs --json $R/residency_noreg_tree.json
$SIM --workload mixed --rates 1.5,1.6,1.75,2 --programs 2000 --policy fcfs,autellix,autellix-lru \
  --baselines fcfs --json $R/residency_noreg_mixed.json
# Four engines: locality against sticky (consistent hashing) and round robin.
for b in locality sticky round_robin; do
  $SIM --workload chat --engines 4 --balancer $b --rates 10,12,13,14 --programs 8000 --policy autellix \
    --baselines autellix --json $R/residency_chat4_$b.json
  $SIM --workload coding --scale 4 --engines 4 --balancer $b --concurrency 76,152,304 --programs 1500 \
    --policy autellix --baselines autellix --json $R/residency_fleet4_$b.json
done
