#!/usr/bin/env bash
# The CUDA path in one run, for a machine with a GPU and PyTorch: the gpu-marked tests; benchmarks/bench_gpu.py
# (achieved FLOP/s of a stage-I step against the matmul peak); the paper's stage-I, pose and stage-II configs
# (configs/*_market.yaml) for STEPS steps in bf16 on a 128x64 SimMarket; then, where torchreid and faiss import (a
# lent GPU machine's image has neither: carry them as wheels), a small Virtual Market build and a short re-ID run
# on CUDA (resnet50, real and real+virtual). The log and the runs' logs are copied to $OUT whatever happens.
#
#   STEPS=300 bash benchmarks/gpu_check.sh          # work in $WORK (default /tmp/vm_gpu), logs in $OUT or $WORK
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
STEPS=${STEPS:-300}
W=${WORK:-/tmp/vm_gpu}
LOGS=${OUT:-$W}
REID_EPOCHS=${REID_EPOCHS:-3}
BENCH_ARGS=${BENCH_ARGS:---batches 16,64 --steps 30}
rm -rf "$W/runs"
mkdir -p "$W" "$LOGS"
exec > >(tee "$LOGS/gpu_check.log") 2>&1
vm() { "$PY" -m augment.cli "$@"; }
t0=$SECONDS
stamp() { echo "== [$((SECONDS - t0)) s] $*"; }
collect() {  # what the runs wrote that is worth bringing back, also after a failure
  for f in stage1/log.txt stage1/metrics.jsonl stage2/log.txt; do
    if [ -f "$W/runs/$f" ]; then cp "$W/runs/$f" "$LOGS/${f//\//_}"; fi
  done
  cp "$W"/runs/reid/*.csv "$LOGS/" 2>/dev/null || true
  grid=$(ls "$W"/runs/stage1/grid-*.png 2>/dev/null | tail -1 || true)
  if [ -n "$grid" ]; then cp "$grid" "$LOGS/stage1_grid.png"; fi
}
trap collect EXIT

if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"

stamp "tests marked gpu"
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_stage1.py tests/test_builder.py

stamp "stage-I step FLOP/s"
if "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  "$PY" benchmarks/bench_gpu.py $BENCH_ARGS
else
  echo "no CUDA device: bench_gpu.py skipped"
fi

stamp "SimMarket 100 ids at 128x64"
[ -f "$W/sim/simmarket.json" ] || vm simulate --out "$W/sim" --ids 100 --size 128x64 --quiet --overwrite

common=(--set "train.steps=$STEPS" --quiet)
stamp "stage I, configs/stage1_market.yaml, $STEPS steps"
vm train stage1 -c configs/stage1_market.yaml --run-dir "$W/runs/stage1" "${common[@]}" \
  --set "data.root=$W/sim" --set train.log_every=50 --set "train.sample_every=$STEPS" \
  --set "train.snapshot_every=$STEPS"
stamp "pose autoencoder, configs/pose_market.yaml, $STEPS steps"
vm train pose -c configs/pose_market.yaml --run-dir "$W/runs/pose" "${common[@]}" --set "data.root=$W/sim"
stamp "stage II, configs/stage2_market.yaml, $STEPS steps"
vm train stage2 -c configs/stage2_market.yaml --run-dir "$W/runs/stage2" "${common[@]}" \
  --set "stage1_run=$W/runs/stage1" --set "pose_run=$W/runs/pose"

if ! "$PY" -c "import faiss, torchreid" 2>/dev/null; then
  stamp "build and re-ID skipped: faiss or torchreid does not import here"
  exit 0
fi
stamp "Virtual Market build, 50 identities x 8, rendered on the GPU (device auto)"
vm build -c configs/build_market.yaml --quiet --set "stage2_run=$W/runs/stage2" --set "out=$W/runs/vm" \
  --set device=auto \
  --set identities=50 --set images_per_id=8
stamp "re-ID, configs/reid_market.yaml, $REID_EPOCHS epochs, seed 0"
vm reid ablate -c configs/reid_market.yaml --quiet --set "real_root=$W/sim" --set "virtual_root=$W/runs/vm" \
  --set "settings=[real, real+virtual]" --set "seeds=[0]" --set "train.epochs=$REID_EPOCHS" \
  --set train.size=[128,64] --set train.workers=4 --set "out=$W/runs/reid"
stamp "done"
