#!/bin/bash
# The GPU figures of the extraction issue, in one run on a lent GPU machine (device tool):
# ResNet-152 through the whole pipeline vs the bare forward, bf16 + channels_last and fp32.
# Runs with the machine's own python3 (torch, torchvision, pillow, h5py); the default GPU
# mode runs in one process with decode threads, so dask is not needed there.
#     OUT=/tmp/out bash benchmarks/gpu_extract.sh        # N=12000 images by default
set -euo pipefail
OUT=${OUT:-/tmp/maf-gpu-out}
N=${N:-12000}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision, PIL, h5py, os; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'pillow', PIL.__version__, 'h5py', h5py.__version__, 'cpus', os.cpu_count())" | tee -a "$OUT/gpu.txt"
for precision in bf16 fp32; do
    extra=""
    [ "$precision" = bf16 ] && extra="--channels-last" || extra="--no-channels-last"
    python3 benchmarks/extract.py --device cuda --images "$N" --batch-size 128 --shard-size 1024 \
        --precision "$precision" $extra --bare-seconds 10 --dir /tmp/maf-gpu-bench 2>&1 | tee "$OUT/$precision.log"
done
