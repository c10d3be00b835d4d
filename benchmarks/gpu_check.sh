#!/usr/bin/env bash
# One prepared GPU check for a lent H100/H200 (<= 10 minutes, nothing from a registry):
# build the CUDA extension against the machine's own torch, run the GPU correctness
# tests (in parallel, autotuning off, never the interpreter), then a short fixed
# benchmark list; every step under its own `timeout`, every result written as soon as
# its step ends, at most 8 files under $OUT:
#
#   steps.log       each step: start, exit status, seconds (or "skipped: why")
#   device.txt      GPU, driver, torch/triton/nvcc versions, measured bf16 matmul rate
#   build.log       pip install -e . (CUDA extension, sm_90)
#   tests.log       pytest output of the correctness step
#   tests.xml       its JUnit report (per-test outcome and time)
#   bench.log       pytest output of the benchmark steps
#   bench.json      all benchmark results so far (merged after every step)
#   bench_table.md  benchmarks/summarize.py of bench.json
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh            # on the GPU machine
#   OUT=/some/dir bash benchmarks/gpu_check.sh --dry-run  # same plumbing, no CUDA
#
# --dry-run (CI, CPU only): every step that needs CUDA reports "skipped"; the rest runs
# (versions, collection of the test and benchmark selections, merge, summary, bundling).
# GPU_CHECK_BUDGET (seconds, default 570) caps the sum of all step timeouts.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PARTS=$(mktemp -d)                  # per-step benchmark JSON, merged into $OUT/bench.json
trap 'rm -rf "$PARTS"' EXIT
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET              # compiled kernels only
PY=${PYTHON:-python}
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-570}
: > "$OUT/steps.log"

log() { echo "[$(date -u +%T)] $*" | tee -a "$OUT/steps.log"; }

# step NAME LIMIT_S NEEDS_CUDA(0/1) LOGFILE CMD...: run CMD under `timeout`, never past
# the budget; append its output to LOGFILE.
step() {
  local name=$1 limit=$2 cuda=$3 logfile=$4
  shift 4
  if [ "$cuda" = 1 ] && [ "$DRY" = 1 ]; then
    log "$name: skipped (dry run: needs CUDA)"
    return 0
  fi
  local left=$((BUDGET - ($(date +%s) - START)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    log "$name: skipped (time budget of ${BUDGET} s spent)"
    return 0
  fi
  log "$name: start (timeout ${limit} s)"
  local t0=$(date +%s) rc
  echo "===== $name =====" >> "$OUT/$logfile"
  timeout -k 10 "$limit" "$@" >> "$OUT/$logfile" 2>&1
  rc=$?
  log "$name: exit $rc after $(($(date +%s) - t0)) s$([ $rc = 124 ] && echo ' (timed out)')"
  return 0
}

# ----------------------------------------------------------------------------- device
{
  command -v nvidia-smi > /dev/null \
    && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  command -v nvcc > /dev/null && nvcc --version | tail -2
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

# CUDA_HOME: the toolkit of the nvcc on PATH (not a guessed /usr/local/cuda).
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc > /dev/null; then
  CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
fi
export CUDA_HOME=${CUDA_HOME:-} GGNET_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
echo "CUDA_HOME=$CUDA_HOME" >> "$OUT/device.txt"

# ------------------------------------------------------------------------------ build
step build 120 1 build.log $PY -m pip install --no-build-isolation --no-deps -e .

# ------------------------------------------------------------------------ correctness
# The backend contract suite and the GPU tests (the issue's fp16/bf16 cases at 64x64,
# not the CPU-side float64 model); autotuning off (each kernel runs its default
# configuration: no timing launches); one line per test as it ends (-v); in parallel
# when pytest-xdist exists.  The host emulation of the CUDA kernels (a CPU check, minutes
# of g++) is left to CI.
NUM=tests/backends/triton/test_triton_numerics.py
TESTS="tests/backends/test_backend_contract.py tests/backends/triton/test_triton_gpu.py tests/backends/cuda/test_cuda_backend.py
       tests/backends/triton/test_triton_spatial.py tests/backends/triton/test_triton_channel.py tests/backends/triton/test_triton_joint.py
       $NUM::test_float16_at_64x64_issue_recipe $NUM::test_bfloat16_at_64x64_issue_recipe_on_gpu"
PAR=""
$PY -c "import xdist" 2> /dev/null && PAR="-n 8"
# shellcheck disable=SC2086
step collect 30 0 tests.log $PY -m pytest --collect-only -q $TESTS
# shellcheck disable=SC2086
step tests 150 1 tests.log env GGNET_TRITON_AUTOTUNE=0 $PY -m pytest -v -rs $PAR \
  -p no:cacheprovider --junitxml="$OUT/tests.xml" -k "not in_host_emulation" $TESTS

# ----------------------------------------------------------------- bf16 matmul rate
step matmul 20 1 device.txt $PY -c "
import torch
a = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize(); s, e = torch.cuda.Event(True), torch.cuda.Event(True)
s.record()
for _ in range(20): a @ b
e.record(); torch.cuda.synchronize()
print(f'matmul bf16 TFLOP/s: {2 * 8192**3 * 20 / (s.elapsed_time(e) / 1e3) / 1e12:.1f}')"
MM=$(grep -o 'matmul bf16 TFLOP/s: [0-9.]*' "$OUT/device.txt" | tail -1 | awk '{print $4}')

# ----------------------------------------------------------------------- benchmarks
# Fixed list: spatial operator, d = dg in {32, 256} (C = 256), N in {64x64, 128x128},
# forward and forward+backward; triton, cuda, compile (a fresh torch.compile per case),
# eager; FlexAttention at d = 32.  combine="joint" (first, it decides whether auto may
# prefer triton over sdpa on CUDA): triton against sdpa and FlexAttention, both d.
# Each step writes its own JSON, merged at once.
merge() {
  $PY - "$PARTS" "$OUT/bench.json" <<'PY'
import glob, json, sys
parts = sorted(glob.glob(sys.argv[1] + "/*.json"))
merged = {"benchmarks": []}
for path in parts:
    try:
        data = json.load(open(path))
    except (OSError, ValueError):
        continue
    merged.update({k: v for k, v in data.items() if k != "benchmarks"})
    merged["benchmarks"] += data.get("benchmarks", [])
json.dump(merged, open(sys.argv[2], "w"), indent=1)
print(f"bench.json: {len(merged['benchmarks'])} results from {len(parts)} steps")
PY
  $PY benchmarks/summarize.py "$OUT/bench.json" ${MM:+--matmul-tflops "$MM"} \
    > "$OUT/bench_table.md" 2>> "$OUT/bench.log"
}
SIZES="(N64x64 or N128x128)"
PROVIDERS="(triton or cuda or compile or eager)"
bench() {  # NAME LIMIT FILE -k EXPRESSION
  local name=$1 limit=$2 file=$3 expr=$4
  if [ "$DRY" = 1 ]; then  # the selection must exist on the GPU: check it collects
    step "$name-collect" 60 0 bench.log env GGNET_BENCH_GPU_GRID=1 \
      $PY -m pytest "$file" --collect-only -q -k "$expr"
  fi
  step "$name" "$limit" 1 bench.log $PY -m pytest "$file" --benchmark-only -q -p no:cacheprovider \
    -k "$expr" --benchmark-json="$PARTS/$name.json"
  merge >> "$OUT/bench.log" 2>&1
}
bench bench_joint 60 benchmarks/test_bench_ops.py "test_spatial_joint and $SIZES and (triton or sdpa)"
bench bench_flex_joint 45 benchmarks/test_bench_flex.py "test_joint_flex"
bench bench_d32 75 benchmarks/test_bench_ops.py "test_spatial and d32-dg32 and $SIZES and $PROVIDERS"
bench bench_d256 75 benchmarks/test_bench_ops.py "test_spatial and d256-dg256 and $SIZES and $PROVIDERS"
bench bench_flex 45 benchmarks/test_bench_flex.py "test_spatial_flex and d32-dg32"
[ -f "$OUT/bench_table.md" ] && head -40 "$OUT/bench_table.md"
log "done in $(($(date +%s) - START)) s; files: $(ls "$OUT" | tr '\n' ' ')"
