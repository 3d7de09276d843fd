#!/usr/bin/env bash
# The checks a CPU cannot run, in a few minutes on a machine with a CUDA GPU:
#   1. the speed benchmarks on CUDA (bench/, one training step of each script, FID features);
#   2. two epochs of each script on a small image folder, then a resume that continues to epoch 3;
#   3. fid.py's Inception features on CUDA against the CPU on the same 500 images;
#   4. one epoch of dcgan.py on 10,000 images: one process, torchrun with one process, and torchrun with
#      every GPU when there are more (images/s of each, from metrics.csv).
# usage: bash bench/gpu_check.sh [OUT]    (OUT: default out/gpu-check; it ends with a summary)
# Expected: every step ends "ok". FID: fid.extract() turns TF32 off, so CUDA and CPU FIDs should agree to a
# few thousandths (float32 summation order only). The Python parts are bench/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/gpu-check}
mkdir -p "$out"
log() { echo "== $*" | tee -a "$out/summary.txt"; }
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'" || { echo "no CUDA GPU"; exit 2; }
log "$(python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(),
      'capability', torch.cuda.get_device_capability())")"

# 32x32 RGB PNGs: CIFAR-10's first training images when ./data holds them, else random images
rm -rf "$out/images" "$out/speed-images"
python bench/gpu_check.py images "$out/images" "$out/speed-images"

log "1. bench on CUDA"
python -m pytest -q bench/ --benchmark-only -k cuda --benchmark-columns=mean,median,rounds \
  --benchmark-json "$out/bench.json" | tee -a "$out/summary.txt"

log "2. two epochs of each script on CUDA, then a resume to epoch 3"
for script in dcgan wgan_sn; do
  rm -rf "$out/$script"
  python $script.py --dataset folder --data-dir "$out/images" --epochs 2 --device cuda --out-dir "$out/$script"
  python $script.py --dataset folder --data-dir "$out/images" --epochs 3 --device cuda --out-dir "$out/$script" --resume
  log "$script: $(python bench/gpu_check.py resumed "$out/$script/ckpt.pt" 3)"
done
rm -rf "$out/mlp_gan"
python mlp_gan.py --epochs 2 --steps-per-epoch 300 --device cuda --out-dir "$out/mlp_gan"
python mlp_gan.py --epochs 3 --steps-per-epoch 300 --device cuda --out-dir "$out/mlp_gan" --resume | tail -2
log "mlp_gan: $(tail -1 "$out/mlp_gan/metrics.csv" | cut -d, -f1-3) (kind, epoch, step: epoch 3 is ok)"

log "3. FID of 500 images against 500 others: CUDA against the CPU"
python bench/gpu_check.py fid "$out/images" | tee -a "$out/summary.txt"

log "4. one epoch of dcgan.py on 10,000 images: one process, then torchrun"
gpus=$(python -c "import torch; print(torch.cuda.device_count())")
speed=(--dataset folder --data-dir "$out/speed-images" --epochs 1)
rm -rf "$out"/speed-*process*
python dcgan.py "${speed[@]}" --device cuda --out-dir "$out/speed-1-process"
torchrun --standalone --nproc_per_node=1 dcgan.py "${speed[@]}" --out-dir "$out/speed-torchrun-1-process"
runs=("$out/speed-1-process" "$out/speed-torchrun-1-process")
if [ "$gpus" -gt 1 ]; then
  torchrun --standalone --nproc_per_node="$gpus" dcgan.py "${speed[@]}" --out-dir "$out/speed-torchrun-$gpus-processes"
  runs+=("$out/speed-torchrun-$gpus-processes")
fi
python bench/gpu_check.py speed "${runs[@]}" | tee -a "$out/summary.txt"
log "done: $out/summary.txt"
