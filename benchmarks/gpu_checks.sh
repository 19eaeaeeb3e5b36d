#!/usr/bin/env bash
# The CUDA paths, checked on a lent GPU machine (the device tool's H200; not part of CI or the tests):
#   1. fp16 autocast with the gradient scaler and channels_last, DataLoader workers with pinned memory
#      (the quickstart's finetune, teach and distill stages on CUDA);
#   2. the torchrun launcher, one process (one GPU: WORLD_SIZE 1 creates no process group, so this does
#      not exercise NCCL or DistributedDataParallel);
#   3. issue 18's MobileNetV3-Small case (benchmarks/mnv3_qat.py train): bf16 + channels_last training at
#      224 px and the qat stage's fake quantization on CUDA, one seed after another.
# Usage there: [CHECKS=0] bash benchmarks/gpu_checks.sh OUTDIR [SEEDS... | none]   (CHECKS=0 skips 1 and 2;
# a seed takes about 6 min there, so one seed a call; Python packages it lacks: .whl/, see the device
# tool's notes; the wheels are installed into /tmp/site).
set -u
OUT=${1:?outdir}; shift
SEEDS=${*:-0 1 2}
LOG=$OUT/log.txt
export PYTHONUNBUFFERED=1
{
  if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  fi
  python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1
  export PYTHONPATH=/tmp/site
  nvidia-smi -L; nproc
  python3 -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'ort', o.__version__)"
  if [ "${CHECKS:-1}" != 0 ]; then
    echo "== 1. quickstart to distill (1 + 2 epochs), fp16 + GradScaler + channels_last, workers 4"
    start=$(date +%s)
    timeout 150 python3 -m edgedistill run pipelines/quickstart.yaml --store /tmp/qs --until distill \
      --set teacher.epochs=1 --set distill.epochs=2 --set teacher.precision=fp16 --set distill.precision=fp16 \
      --set teacher.channels_last=true --set teacher.workers=4 --set distill.channels_last=true --set distill.workers=4
    echo "rc $? in $(( $(date +%s) - start )) s"
    echo "== 2. torchrun launcher, one process (finetune only)"
    start=$(date +%s)
    timeout 120 python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m edgedistill run \
      pipelines/quickstart.yaml --store /tmp/qs_ddp --until finetune --set teacher.epochs=1 --set teacher.precision=bf16
    echo "rc $? in $(( $(date +%s) - start )) s"
  fi
  [ "$SEEDS" = none ] && exit 0
  for s in $SEEDS; do
    echo "== 3. MobileNetV3-Small at 224 px, seed $s (bf16, channels_last, workers 8)"
    start=$(date +%s)
    python3 benchmarks/mnv3_qat.py train --seeds "$s" --store /tmp/mnv3 --out /tmp/mnv3_runs --set \
      teacher.precision=bf16 teacher.channels_last=true teacher.workers=8 \
      distill.precision=bf16 distill.channels_last=true distill.workers=8 qat.workers=8 qat.channels_last=true \
      && tar -C /tmp/mnv3_runs -cf "$OUT/seed$s.tar" "seed$s"
    echo "rc $? in $(( $(date +%s) - start )) s"
  done
} > "$LOG" 2>&1
