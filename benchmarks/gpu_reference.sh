#!/usr/bin/env bash
# The reference generator in one GPU-window job (see benchmarks/gpu_reference.py): data, stage I, pose AE and
# stage II of a reference config under a wall-clock budget, packed into OUT as files of at most 15 MiB; exit code
# 0 when training finished and the models are packaged, 3 when it stopped at the budget (rerun with
# --resume-from OUT in the next window), 2 on bad input. Runs on the machine's own python3 with PyTorch; nothing
# is installed (the job needs no torchreid or faiss).
#
#   bash benchmarks/gpu_reference.sh "$OUT" --budget-s 480                        # first window
#   bash benchmarks/gpu_reference.sh "$OUT" --resume-from outputs/gpu/w1 --budget-s 480   # the next one
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; fi
exec "${PYTHON:-python3}" benchmarks/gpu_reference.py "$@"
