#!/usr/bin/env bash
# One device run: every --gpu bench, each output also saved under $OUT. Run from the repo root on a CUDA machine.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
for bench in forward trace train; do
    echo "== bench/$bench.py --gpu"
    timeout 150 python bench/$bench.py --gpu 2>&1 | tee "${OUT:-/tmp}/$bench.txt"
done
