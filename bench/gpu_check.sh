#!/usr/bin/env bash
# The checks a CPU cannot run, in a few minutes on a machine with a CUDA GPU:
#   1. the speed benchmarks on CUDA (bench/, one training step of each script, FID features);
#   2. two epochs of each script on a small image folder, then a resume that continues to epoch 3;
#   3. fid.py's Inception features on CUDA against the CPU on the same 500 images, TF32 off and on.
# usage: bash bench/gpu_check.sh [OUT]    (OUT: default out/gpu-check; it ends with a summary)
# Expected: every step ends "ok". FID: with TF32 off, CUDA and CPU FIDs should agree to a few
# thousandths (float32 summation order only); with TF32 on (what the scripts enable for training),
# convolutions round their inputs to 10-bit mantissas, so expect the FIDs to differ by up to about 1%.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/gpu-check}
mkdir -p "$out"
log() { echo "== $*" | tee -a "$out/summary.txt"; }
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'" || { echo "no CUDA GPU"; exit 2; }
log "$(python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(),
      'capability', torch.cuda.get_device_capability())")"

# 1,000 32x32 RGB PNGs: CIFAR-10's first training images when ./data holds them, else random images.
python - "$out/images" <<'EOF'
import sys
from pathlib import Path
import torch
from PIL import Image
import fid
try:
    x = fid.load_cifar10("data", True)[:1000]
except fid.UsageError:
    x = torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
folder = Path(sys.argv[1])
for part in ("a", "b"):
    (folder / part).mkdir(parents=True, exist_ok=True)
for i, img in enumerate(x):
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / "ab"[i % 2] / f"{i:04d}.png")
EOF
log "1. bench on CUDA"
python -m pytest -q bench/ --benchmark-only -k cuda --benchmark-columns=mean,median,rounds \
  --benchmark-json "$out/bench.json" | tee -a "$out/summary.txt"

log "2. two epochs of each script on CUDA, then a resume to epoch 3"
for script in dcgan wgan_sn; do
  rm -rf "$out/$script"
  python $script.py --dataset folder --data-dir "$out/images" --epochs 2 --device cuda --out-dir "$out/$script"
  python $script.py --dataset folder --data-dir "$out/images" --epochs 3 --device cuda --out-dir "$out/$script" --resume
  log "$script: $(python -c "import torch; c = torch.load('$out/$script/ckpt.pt', weights_only=True);
print('epoch', c['epoch'], 'step', c['step'], 'GPU stream saved:', c['device_rng'] is not None,
      'ok' if c['epoch'] == 3 and c['device_rng'] else 'FAILED')")"
done
rm -rf "$out/mlp_gan"
python mlp_gan.py --epochs 2 --steps-per-epoch 300 --device cuda --out-dir "$out/mlp_gan"
python mlp_gan.py --epochs 3 --steps-per-epoch 300 --device cuda --out-dir "$out/mlp_gan" --resume | tail -2
log "mlp_gan: $(tail -1 "$out/mlp_gan/metrics.csv" | cut -d, -f1-3) (kind, epoch, step: epoch 3 is ok)"

log "3. FID of 500 images against 500 others: CUDA (TF32 off, on) against the CPU"
python - "$out/images" <<'EOF' | tee -a "$out/summary.txt"
import sys
import torch
import fid
a, b = (fid.load_folder(f"{sys.argv[1]}/{part}") for part in "ab")
def fid_on(device):
    net = fid.load_inception(device=device)
    fa, fb = (fid.extract(net, x, desc=f"{device}")[0] for x in (a, b))
    return fid.frechet_distance(*fid.statistics(fa), *fid.statistics(fb)), fa
cpu, feats_cpu = fid_on("cpu")
for tf32 in (False, True):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    gpu, feats_gpu = fid_on("cuda")
    worst = abs(feats_gpu - feats_cpu).max() / abs(feats_cpu).max()
    print(f"TF32 {'on ' if tf32 else 'off'}: FID CPU {cpu:.4f}, CUDA {gpu:.4f}, difference {gpu - cpu:+.4f} "
          f"({100 * (gpu - cpu) / cpu:+.3f}%); largest feature difference {worst:.1e} of the largest feature")
EOF
log "done: $out/summary.txt"
