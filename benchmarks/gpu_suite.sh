#!/bin/bash
# The GPU figures in one command, from a fresh copy of the tree, in at most 13 minutes:
#   1. the machine: GPU, versions, cores (one JSON line);
#   2. extraction (benchmarks/gpu_extract.py): decode-only rates for --decode full, fast and
#      device; the bare ResNet-152 bf16 forward; extract_images end to end on 10,000 JPEGs of
#      mixed sizes and on 10,000 of 1024x768, per decode mode, with efficiency and GPU busy
#      fraction (one JSON line per figure);
#   3. training (benchmarks/gpu_epoch.py): `maf train`'s loop at Twitter-2015 size (4,000
#      training tweets), BERT-base size, bf16, seconds per epoch, and one epoch of the
#      original design (pad to 128, ResNet-152 in every step) on the same GPU, and UMT-BERT-CRF's
#      seconds per epoch on the same text and store (one JSON line);
#   4. the model step (benchmarks/model_step.py --device cuda): every model of the registry and
#      BERT-CRF at BERT-base size, a training step each in 7 interleaved rounds, medians, ratios
#      to BERT-CRF, and each model's peak GPU memory in its own process (one JSON line).
# Each step has its own time limit; one that runs out prints {"timed_out": true} and the next
# one starts. Nothing is installed: the lent GPU machines reach no package index. It runs with
# the machine's python3 (PY=... for another) and needs torch, torchvision, pillow, h5py, numpy,
# transformers, tokenizers, safetensors, tensorboard and pyyaml, all in those machines' image;
# a missing one is named in a JSON line before anything runs. Dask is not needed: one GPU
# extracts in this process.
#
#     bash benchmarks/gpu_suite.sh            # logs under OUT (default /tmp/maf-gpu-suite)
#     bash benchmarks/gpu_suite.sh --smoke    # here, on the CPU, tiny sizes: checks the suite
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
if [ -z "${PY:-}" ]; then
    if [ "$SMOKE" = 1 ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=${OUT:-/tmp/maf-gpu-suite}
WORK=${WORK:-/tmp/maf-gpu-suite-work}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
started=$(date +%s)

step() {  # step NAME LIMIT_SECONDS COMMAND...: JSON lines to stdout, everything to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    timeout --kill-after=10 "$limit" "$@" 2>>"$OUT/$name.log" | tee -a "$OUT/$name.log" | grep '^{'
    local rc=${PIPESTATUS[0]}
    if [ $rc -ne 0 ]; then
        echo "{\"benchmark\": \"gpu_suite\", \"step\": \"$name\", \"rc\": $rc, \"timed_out\": $([ $rc -eq 124 ] || [ $rc -eq 137 ] && echo true || echo false), \"log\": \"$OUT/$name.log\"}"
        tail -5 "$OUT/$name.log" >&2
    fi
}

"$PY" - <<'EOF' || exit 1
import importlib.util, json, os, platform
need = ["torch", "torchvision", "PIL", "h5py", "numpy", "transformers", "tokenizers", "safetensors",
        "tensorboard", "yaml"]
missing = [name for name in need if importlib.util.find_spec(name) is None]
info = {"benchmark": "gpu_suite", "figure": "machine", "python": platform.python_version(),
        "cpus": os.cpu_count(), "missing": missing}
if not missing:
    import h5py, PIL, torch, torchvision, transformers
    info.update(torch=torch.__version__, torchvision=torchvision.__version__, pillow=PIL.__version__,
                h5py=h5py.__version__, transformers=transformers.__version__,
                gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
print(json.dumps(info))
raise SystemExit(1 if missing else 0)
EOF

if [ "$SMOKE" = 1 ]; then
    step extract 120 "$PY" benchmarks/gpu_extract.py --smoke --dir "$WORK/extract"
    step epoch 240 "$PY" benchmarks/gpu_epoch.py --train 60 --epochs 2 --bert tiny --backbone resnet18 \
        --device cpu --batch-size 16 --original-steps 2 --umt-epochs 2 --dir "$WORK/epoch"
    step model_step 300 "$PY" benchmarks/model_step.py --encoders tiny --rounds 2 --device cpu
else
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > "$OUT/nvidia-smi.txt" 2>&1
    step extract 250 "$PY" benchmarks/gpu_extract.py --images 10000 --dir "$WORK/extract"
    step epoch 200 "$PY" benchmarks/gpu_epoch.py --train 4000 --epochs 3 --bert base --device cuda \
        --batch-size 64 --umt-epochs 2 --dir "$WORK/epoch"
    step model_step 300 "$PY" benchmarks/model_step.py --encoders bert-base --rounds 7 --device cuda
fi
echo "{\"benchmark\": \"gpu_suite\", \"figure\": \"done\", \"seconds\": $(( $(date +%s) - started )), \"logs\": \"$OUT\"}"
