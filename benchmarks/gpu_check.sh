#!/usr/bin/env bash
# One prepared GPU check (for a lent H100/H200): build the CUDA extension against the
# machine's own torch, run the GPU correctness tests, run the benchmarks, and write
# everything under $OUT (device, versions, logs, JSON, Markdown tables).
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh [--quick]
#
# Installs nothing from a registry (--no-deps); copy $OUT/* into benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
QUICK=${1:-}
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/steps.log"; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  nvcc --version | tail -2
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

log "build (CUDA extension, sm_90 only for speed)"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} GGNET_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
/usr/bin/time -f "build wall %e s" pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1
tail -3 "$OUT/build.log"

log "GPU correctness tests"
python -m pytest -q -rs -x tests/test_backend_contract.py tests/test_triton_gpu.py tests/test_cuda_backend.py tests/test_triton_spatial.py \
  tests/test_triton_channel.py tests/test_reference_backend.py tests/test_extension.py \
  > "$OUT/tests.log" 2>&1
echo "tests exit $?" | tee -a "$OUT/steps.log"
tail -5 "$OUT/tests.log"

log "bf16 matmul rate"
python - > "$OUT/matmul.txt" 2>&1 <<'PY'
import torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize(); s, e = torch.cuda.Event(True), torch.cuda.Event(True)
s.record()
for _ in range(20): a @ b
e.record(); torch.cuda.synchronize()
print(f"{2 * 8192**3 * 20 / (s.elapsed_time(e) / 1e3) / 1e12:.1f}")
PY
MM=$(tail -1 "$OUT/matmul.txt"); log "matmul bf16 TFLOP/s: $MM"

log "benchmarks"
SEL=""
[ "$QUICK" = "--quick" ] && SEL="-k N64"
# test_bench_cpu.py measures the CPU backend (minutes of CPU-only cases): not on the GPU budget.
python -m pytest benchmarks/ --benchmark-only -q $SEL --ignore=benchmarks/test_bench_cpu.py \
  --benchmark-json="$OUT/bench.json" > "$OUT/bench.log" 2>&1
echo "bench exit $?" | tee -a "$OUT/steps.log"
python benchmarks/summarize.py "$OUT/bench.json" --matmul-tflops "$MM" > "$OUT/bench_table.md" 2>>"$OUT/bench.log"
head -40 "$OUT/bench_table.md"
log "done"
