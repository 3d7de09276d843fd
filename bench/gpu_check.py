#!/usr/bin/env python3
"""gpu_check.py: the Python parts of bench/gpu_check.sh, a command each.

tests/test_gpu_check.py runs them on the CPU, with and without CIFAR-10 in ./data.

    python bench/gpu_check.py images OUT/images OUT/speed      # the PNG folders the checks train on
    python bench/gpu_check.py resumed OUT/dcgan/ckpt.pt 3      # a resumed run's checkpoint: ok or FAILED
    python bench/gpu_check.py speed OUT/speed-1 OUT/speed-...  # images/s of each run's metrics.csv
    python bench/gpu_check.py fid OUT/images                   # Inception features: CUDA against the CPU
"""
import argparse, csv, statistics, sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fid  # noqa: E402


def first_images(data_dir, n):  # uint8 (n, 3, 32, 32): CIFAR-10's first training images, else random ones
    batches = [Path(data_dir) / "cifar-10-batches-py" / f"data_batch_{i}" for i in range(1, 6)]
    if all(b.is_file() for b in batches):  # (load_cifar10 would try to download missing ones)
        return fid.load_cifar10(data_dir, train=True)[0][:n]
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def write_images(images, folder, parts=("",)):  # PNGs dealt in turn into folder/part for each part
    for part in parts:
        (Path(folder) / part).mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        path = Path(folder) / parts[i % len(parts)] / f"{i:05d}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)


def resumed(ckpt, epochs):  # a line: the checkpoint reached the epochs and saved the GPU's random stream
    c = torch.load(ckpt, weights_only=True)
    ok = c["epoch"] == epochs and c["device_rng"] is not None
    return (f"epoch {c['epoch']} step {c['step']} GPU stream saved: {c['device_rng'] is not None} "
            f"{'ok' if ok else 'FAILED'}")


def images_per_second(run):  # the median of the step rows' img_per_s in run/metrics.csv
    with open(Path(run) / "metrics.csv", newline="") as f:
        speeds = [float(row["img_per_s"]) for row in csv.DictReader(f) if row["kind"] == "step"]
    return statistics.median(speeds)


def fid_cuda_against_cpu(folder, device="cuda"):  # a line: FID of folder/a against folder/b on both devices
    a, b = (fid.load_folder(Path(folder) / part) for part in "ab")
    scores, features = {}, {}
    for where in ("cpu", device):
        net = fid.load_inception(device=where)
        fa, fb = (fid.extract(net, x, desc=where)[0] for x in (a, b))  # (extract() turns TF32 off)
        scores[where], features[where] = fid.frechet_distance(*fid.statistics(fa), *fid.statistics(fb)), fa
    worst = abs(features[device] - features["cpu"]).max() / abs(features["cpu"]).max()
    difference = scores[device] - scores["cpu"]
    return (f"FID CPU {scores['cpu']:.4f}, {device} {scores[device]:.4f}, difference {difference:+.4f} "
            f"({100 * difference / scores['cpu']:+.3f}%); largest feature difference {worst:.1e} of the largest")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True)
    commands.add_parser("images").add_argument("folders", nargs=2, help="IMAGES (a/, b/: 500 each) SPEED (10,000)")
    check = commands.add_parser("resumed")
    check.add_argument("ckpt")
    check.add_argument("epochs", type=int)
    commands.add_parser("speed").add_argument("runs", nargs="+")
    commands.add_parser("fid").add_argument("images")
    args = p.parse_args(argv)
    if args.command == "images":
        write_images(first_images("data", 1000), args.folders[0], parts=("a", "b"))
        write_images(first_images("data", 10000), args.folders[1])
    elif args.command == "resumed":
        print(resumed(args.ckpt, args.epochs))
    elif args.command == "speed":
        for run in args.runs:
            print(f"{run}: {images_per_second(run):,.0f} images/s")
    else:
        print(fid_cuda_against_cpu(args.images))


if __name__ == "__main__":
    main()
