#!/usr/bin/env bash
# One device run (under 10 minutes: three benches of at most 3 each): every --gpu bench, training also compiled;
# each output also saved under $OUT. Run from the repo root on a CUDA machine.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
for bench in forward trace train; do
    echo "== bench/$bench.py --gpu"
    extra=""; [ "$bench" = train ] && extra="--compile"  # training: eager and torch.compile
    timeout 180 python bench/$bench.py --gpu $extra 2>&1 | tee "${OUT:-/tmp}/$bench.txt"
done
