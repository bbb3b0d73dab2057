#!/usr/bin/env bash
# The GPU checks in one run (issue 16), for a fresh machine with an NVIDIA GPU, in at most 8
# minutes. It installs gatex next to the machine's own CUDA torch (never a CPU wheel over it),
# then runs, each step under its own time limit:
#   1. the GPU-marked tests (pytest -m gpu: Triton kernels, the bench's CUDA path, TensorRT);
#   2. benchmarks/trt_kernels.py: bandwidth as a fraction of a device-to-device copy (target
#      >= 0.90) and time against F.gelu (target <= 1.05x), 16M elements;
#   3. gatex bench --device cuda on the zoo GoLU model (the bench's GPU path);
#   4. benchmarks/bench_harness.py --rounds 7 --check (the 16 cores are the steady machine the
#      bench agreement needs).
# Each step's exit code, seconds and output tail go into one JSON file ($1, default
# gpu_check.json; under $OUT when that is set). A step that needs what the machine lacks (no
# CUDA device, no triton) is recorded as skipped with the reason, so the script also runs on
# a CPU machine (tests/test_benchmarks.py does that). GPU_CHECK_INSTALL=0 skips the install,
# GPU_CHECK_BUDGET_S (default 480) is the time all steps share; PYTHON picks the interpreter.
#
#   bash benchmarks/gpu_check.sh [RESULT.json]
set -u
cd "$(dirname "$0")/.."
RESULT=${1:-${OUT:-.}/gpu_check.json}
PY=${PYTHON:-python3}
LOGS=$(mktemp -d)
STEPS=()
BUDGET_END=$(( $(date +%s) + ${GPU_CHECK_BUDGET_S:-480} ))

step() {   # step NAME LIMIT_S COMMAND...: run it, record rc, seconds and the log
    local name=$1 limit=$2
    shift 2
    local left=$(( BUDGET_END - $(date +%s) ))
    if (( left < 10 )); then
        skip "$name" "the 8-minute budget is spent"
        return
    fi
    (( limit > left )) && limit=$left
    local start=$(date +%s)
    timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    STEPS+=("$name|$rc|$(( $(date +%s) - start ))")
    echo "== $name: rc $rc in $(( $(date +%s) - start )) s"
}

skip() {   # skip NAME REASON
    echo "skipped: $2" > "$LOGS/$1.log"
    STEPS+=("$1|skipped|0")
    echo "== $1: skipped ($2)"
}

# -- what the machine has: torch (with CUDA or not), triton -----------------------------------
TORCH=$($PY -c "import torch; print(torch.__version__)" 2>/dev/null)
CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
TRITON=$($PY -c "import triton; print(triton.__version__)" 2>/dev/null || echo "")
echo "torch ${TORCH:-missing}, cuda $CUDA, triton ${TRITON:-missing}"

# -- install gatex beside the machine's torch: a constraint keeps pip from replacing it --------
if [[ "${GPU_CHECK_INSTALL:-1}" == "0" ]]; then
    skip install "GPU_CHECK_INSTALL=0: gatex is already installed"
elif [[ -n "$TORCH" ]]; then
    echo "torch==$TORCH" > "$LOGS/constraints.txt"
    step install 240 $PY -m pip install -q -c "$LOGS/constraints.txt" -e '.[test]'
else
    skip install "torch is not importable here"
fi

if [[ "$CUDA" != "1" ]]; then
    REASON="no CUDA device (torch.cuda.is_available() is False)"
    skip gpu_tests "$REASON"
    skip trt_kernels "$REASON"
    skip bench_cuda "$REASON"
else
    step gpu_tests 150 $PY -m pytest -q -m gpu -p no:cacheprovider tests
    if [[ -n "$TRITON" ]]; then
        step trt_kernels 150 $PY benchmarks/trt_kernels.py --size 16777216 --rounds 20 \
            --json "$LOGS/trt_kernels.json"
    else
        skip trt_kernels "triton is not installed"
    fi
    step bench_cuda 90 $PY -m gatex bench --unit GoLU --backend torch,ort --device cuda \
        --json "$LOGS/bench_cuda.json"
fi
step bench_harness 150 $PY benchmarks/bench_harness.py --rounds 7 --check \
    --json "$LOGS/bench_harness.json"

# -- one JSON: the machine, then per step rc / seconds / parsed JSON / output tail -------------
$PY - "$RESULT" "$LOGS" "${STEPS[@]}" <<'EOF'
import json, platform, sys
from pathlib import Path

result, logs, *steps = sys.argv[1:]
logs = Path(logs)
doc = {"schema": "gatex.gpu-check/1", "machine": platform.platform(), "steps": {}}
try:
    import torch
    doc["torch"] = torch.__version__
    doc["cuda"] = torch.cuda.is_available()
    doc["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
except Exception as exc:  # noqa: BLE001
    doc["torch"] = f"unavailable: {exc}"
for entry in steps:
    name, rc, seconds = entry.split("|")
    log = logs / f"{name}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    record = {"status": "skipped" if rc == "skipped" else ("ok" if rc == "0" else "failed"),
              "rc": None if rc == "skipped" else int(rc), "seconds": int(seconds),
              "tail": text[-3000:]}
    data = logs / f"{name}.json"
    if data.exists():
        try:
            record["json"] = json.loads(data.read_text())
        except ValueError:
            pass
    doc["steps"][name] = record
Path(result).parent.mkdir(parents=True, exist_ok=True)
Path(result).write_text(json.dumps(doc, indent=2) + "\n")
print(f"wrote {result}: " + ", ".join(f"{k} {v['status']}" for k, v in doc["steps"].items()))
EOF
rm -rf "$LOGS"
