#!/usr/bin/env bash
# Checks this machine's GPUs the way the agent will see them, on real hardware:
#   1. NVML: `agora gpus --json` (inventory, health, telemetry), from `agora` built with the CUDA path;
#   2. CUDA: the builtin matmul workloads through cudarc (gpu-runtime/examples/gpu_check.rs): the FP32
#      GEMM kernel against the CPU reference, the matmul-benchmark TFLOPS with its share of the
#      model's peak, and verifiable-matmul's chunk commitments compared bit for bit with the CPU's.
# Prints what it found and exits 0 only when everything agrees; fails clearly without a GPU.
#
# Usage: scripts/gpu-check.sh
# Environment (optional): GPU_CHECK_SIZE (benchmark n, default 8192), GPU_CHECK_ITERATIONS (20),
#   GPU_CHECK_N (verifiable-matmul n, 1024), GPU_CHECK_CHUNK_ROWS (64),
#   GPU_CHECK_SKIP_BUILD=1 (use the binaries already in target/release).
set -euo pipefail
cd "$(dirname "$0")/.."

size=${GPU_CHECK_SIZE:-8192}
iterations=${GPU_CHECK_ITERATIONS:-20}
n=${GPU_CHECK_N:-1024}
chunk_rows=${GPU_CHECK_CHUNK_ROWS:-64}

fail() {
    echo "gpu-check: FAIL: $*" >&2
    exit 1
}

# No point building for minutes on a machine without a GPU: look for the driver first.
if ! ls /dev/nvidia[0-9]* >/dev/null 2>&1 && ! command -v nvidia-smi >/dev/null 2>&1; then
    fail "no NVIDIA GPU here: no /dev/nvidia<N> device and no nvidia-smi"
fi
# cudarc loads both at run time: libcuda from the driver, libnvrtc from the CUDA toolkit (or the
# nvidia-cuda-nvrtc package; LD_LIBRARY_PATH is honoured). Without them the check below exits 2.
have_lib() {
    { ldconfig -p 2>/dev/null | grep "$1" >/dev/null; } ||
        ls /usr/lib*/*/"$1"* /usr/lib*/"$1"* /usr/local/cuda*/lib*/"$1"* >/dev/null 2>&1 ||
        { [[ -n "${LD_LIBRARY_PATH:-}" ]] && tr ':' '\n' <<<"$LD_LIBRARY_PATH" | while read -r d; do ls "$d/$1"* 2>/dev/null; done | grep . >/dev/null; }
}
have_lib libcuda.so || fail "no NVIDIA driver library (libcuda.so) found: install the NVIDIA driver"
have_lib libnvrtc.so || echo "gpu-check: warning: libnvrtc.so not found in the usual places; the CUDA check needs it (CUDA toolkit or nvidia-cuda-nvrtc)" >&2
if command -v nvidia-smi >/dev/null 2>&1; then
    echo "== nvidia-smi"
    nvidia-smi --query-gpu=index,name,uuid,memory.total,driver_version --format=csv,noheader ||
        fail "nvidia-smi cannot talk to the driver"
fi

if [[ "${GPU_CHECK_SKIP_BUILD:-0}" != 1 ]]; then
    echo "== building agora (--features cuda) and the CUDA check, release"
    cargo build --release --features cuda --bin agora
    cargo build --release -p gpu-runtime --features cuda --example gpu_check
fi
agora=target/release/agora
check=target/release/examples/gpu_check
[[ -x "$agora" && -x "$check" ]] || fail "missing $agora or $check (build them or unset GPU_CHECK_SKIP_BUILD)"

echo "== NVML: agora gpus --json"
gpus_json=$(mktemp)
trap 'rm -f "$gpus_json"' EXIT
if ! "$agora" gpus --json >"$gpus_json"; then
    cat "$gpus_json"
    fail "agora gpus: NVML found no usable GPU (see 'unavailable' above)"
fi
cat "$gpus_json"
models=$(grep -o '"model": *"[^"]*"' "$gpus_json" | sed 's/.*: *"\(.*\)"/\1/' || true)
[[ -n "$models" ]] || fail "agora gpus listed no GPU"
echo "NVML models: $(sort <<<"$models" | uniq -c | tr -s ' ' | paste -sd, -)"
model=$(head -n 1 <<<"$models")

echo "== CUDA: matmul-benchmark (n=$size x$iterations) and verifiable-matmul (n=$n, chunkRows=$chunk_rows)"
status=0
# Device 0 is NVML's GPU 0 with CUDA_DEVICE_ORDER=PCI_BUS_ID: its model is the first listed.
CUDA_DEVICE_ORDER=PCI_BUS_ID "$check" "$size" "$iterations" "$n" "$chunk_rows" "$model" || status=$?
case $status in
    0) echo "gpu-check: OK" ;;
    2) fail "CUDA found no usable GPU (libcuda or libnvrtc missing, or no device 0; see above)" ;;
    *) fail "the CUDA path disagrees with the CPU reference or failed (see above)" ;;
esac
