#!/usr/bin/env bash
# One prepared session on a lent CUDA machine (no network): the GPU and 16-core figures of docs/benchmarks.md's
# GPU section, written under $OUT (default: ./gpu_out), within $BUDGET seconds (default 480).
#
#   PHASES="ddp syncs" bash experiments/gpu_session.sh     # wheels the machine lacks in .whl/ (docs/benchmarks.md)
#
# Phases (PHASES, default all, in this order), each with its own time limit so that a slow one cannot starve
# the rest. On the lent machine each new Python process spends about 19 s importing torch, Lightning and
# gymnasium, so the limits below count that, and one session does not fit every phase: pick two or three.
#   learn   every algorithm at 32-true / bf16-mixed / 16-mixed learns (gpu_check.py, one process per
#           algorithm, all at once) and the precision tests run;
#   ddp     CPU DDP scaling at 1, 2, 4, 8 ranks against as many independent processes (ddp_cpu.py), alone;
#   syncs   host syncs per gradient step (host_syncs.py);
#   atari   PPO Atari eager at each precision, one at a time, then compiled at each precision, at once;
#   sac     SAC Pendulum eager, then compiled, one at a time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
PHASES=${PHASES:-learn ddp syncs atari sac}
BUDGET=${BUDGET:-480}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=$PWD:/tmp/site
else
    export PYTHONPATH=$PWD
fi
START=$(date +%s)
log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/summary.log"; }
# A phase's limit: its own, or what is left of the budget less a reserve, whichever is smaller.
limit() { local left=$(( BUDGET - ($(date +%s) - START) - 10 )); (( left < $1 )) && echo $(( left > 5 ? left : 5 )) || echo "$1"; }
quiet() { grep -v -E "^(GPU|TPU|HPU|LOCAL_RANK)|Tensor Cores|set_float32_matmul|num_workers|^ *$"; }
want() { [[ " $PHASES " == *" $1 "* ]]; }
# One benchmark.py worker's RESULT line, its SPS fields only.
result() { grep '^RESULT ' | cut -c8- | python3 -c 'import json, sys; d = json.load(sys.stdin); print({k: d[k] for k in ("sps", "sps_second_half", "return", "env_steps")})' 2>/dev/null; }

log "host: $(nproc) cores; $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
python3 -c "import lightrl, ale_py" 2>"$OUT/import.err" || { log "lightrl does not import: $(tail -1 "$OUT/import.err")"; exit 1; }
log "$(python3 -c 'import torch, lightning, gymnasium; print("torch", torch.__version__, "lightning", lightning.__version__, "gymnasium", gymnasium.__version__)')"

if want learn; then
    log "learn: gpu_check (one process per algorithm) and the precision tests"
    timeout -k 5 "$(limit 90)" python3 -m pytest -q -p no:cacheprovider tests/test_precision.py -k "not all_precisions" >"$OUT/pytest.log" 2>&1 &
    tests=$!
    timeout -k 5 "$(limit 240)" python3 experiments/gpu_check.py --jobs 5 --json "$OUT/gpu_check.json" 2>&1 | quiet | tee -a "$OUT/summary.log"
    wait $tests; log "precision tests: $(tail -1 "$OUT/pytest.log")"
fi
if want ddp; then
    log "ddp: CPU DDP scaling"
    timeout -k 5 "$(limit 240)" python3 experiments/ddp_cpu.py --ranks 1 2 4 8 --timesteps 40000 --repeats 1 --json "$OUT/ddp.json" 2>&1 | tail -8 | tee -a "$OUT/summary.log"
fi
if want syncs; then
    log "syncs: host syncs per gradient step"
    timeout -k 5 "$(limit 120)" python3 experiments/host_syncs.py --json "$OUT/syncs.json" 2>&1 | quiet | tee -a "$OUT/summary.log"
fi
STEPS=${ATARI_STEPS:-8192}
if want atari; then
    log "atari: PPO BreakoutNoFrameskip-v4 (8 envs, $STEPS steps) eager, one at a time, then compiled at once"
    for p in 32-true bf16-mixed 16-mixed; do
        log "atari eager $p: $(timeout -k 5 "$(limit 45)" python3 experiments/benchmark.py --gpu-worker "$p" 0 "$STEPS" 2>>"$OUT/atari.err" | result)"
    done
    for p in 32-true bf16-mixed 16-mixed; do
        ( log "atari compiled $p: $(timeout -k 5 "$(limit 200)" python3 experiments/benchmark.py --gpu-worker "$p" 1 "$STEPS" 2>>"$OUT/atari.err" | result)" ) &
    done
    wait
fi
if want sac; then
    for lib in lightrl lightrl-compile; do
        log "sac $lib: $(timeout -k 5 "$(limit 150)" python3 experiments/benchmark.py --worker sac_pendulum "$lib" 5000 1 --threads 1 2>>"$OUT/sac.err" | result)"
    done
fi
log "done"
