#!/usr/bin/env bash
# Step time and memory of exact vs linear backprop on one GPU, JAX and PyTorch
# Keras backends (benchmarks/step_time.py --backend jax|torch). For a machine
# with JAX and PyTorch built with CUDA and no TensorFlow.
#
#     OUT=/some/dir bash benchmarks/gpu_step_time.sh      # from the repository root
#
# Writes $OUT/step_time_torch_gpu/{results.json,table.md,log.txt} and
# $OUT/step_time_jax_gpu/{...}. Full network sizes (MLPs 784-4x512-10 batch
# 256 timed; 6x1024 batch 2048 for memory), 7 interleaved rounds of 0.15 s
# blocks (wall time: every step returns host numbers, so it is synchronised).
# Expected about 3 minutes on one H100 (PyTorch about 1, JAX about 2: JAX
# compiles every variant and runs the 8 device-memory probes in their own
# processes); each backend has a hard time limit (90 s and 150 s, 4 minutes
# together), and results.json is rewritten after every case, so a run cut
# short keeps what it measured ("complete": false).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TF_CPP_MIN_LOG_LEVEL=2
: "${OUT:?set OUT to the output directory}"
PY=${PYTHON:-python3}
ARGS=(--repeats 7 --block-seconds 0.15)

"$PY" - <<'EOF'
import importlib.util
for name in ("keras", "jax", "torch", "tensorflow"):
    spec = importlib.util.find_spec(name)
    print(f"{name}: {'installed' if spec else 'not installed'}")
EOF
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

status=0
mkdir -p "$OUT/step_time_torch_gpu" "$OUT/step_time_jax_gpu"
# PyTorch first (shorter). No JAX preallocation in case anything imports JAX.
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 90 "$PY" benchmarks/step_time.py --backend torch \
    --out "$OUT/step_time_torch_gpu" "${ARGS[@]}" 2>&1 | tee "$OUT/step_time_torch_gpu/log.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "torch run failed or timed out"; status=1; }
timeout 150 "$PY" benchmarks/step_time.py --backend jax \
    --out "$OUT/step_time_jax_gpu" "${ARGS[@]}" 2>&1 | tee "$OUT/step_time_jax_gpu/log.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "jax run failed or timed out"; status=1; }
exit $status
