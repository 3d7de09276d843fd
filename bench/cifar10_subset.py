#!/usr/bin/env python3
"""cifar10_subset.py: the first N training images of each CIFAR-10 class, as PNGs in a folder a class.

    python bench/cifar10_subset.py 500 data/cifar10-500-a-class     # 10% of CIFAR-10: 5,000 images
    python dcgan.py --dataset folder --data-dir data/cifar10-500-a-class

The same images every time (the first of each class in the training batches' order), named by their
index there. README.md's "Small datasets" trains on these.
"""
import argparse, sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fid  # noqa: E402  (its CIFAR-10 reader)


def write_subset(per_class, folder, data_dir="data"):  # -> how many images were written
    images, labels, classes = fid.load_cifar10(data_dir, train=True)
    written = 0
    for label, name in enumerate(classes):
        (Path(folder) / name).mkdir(parents=True, exist_ok=True)
        for i in (labels == label).nonzero().flatten()[:per_class].tolist():
            Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(Path(folder) / name / f"{i:05d}.png")
            written += 1
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("per_class", type=int, help="images of each class (1 to 5000)")
    p.add_argument("folder", help="where the PNGs go (a sub-folder a class)")
    p.add_argument("--data-dir", default="data", help="where cifar-10-batches-py is")
    args = p.parse_args(argv)
    if not 1 <= args.per_class <= 5000:
        p.error(f"per_class {args.per_class} is not in [1, 5000]")
    try:
        print(f"wrote {write_subset(args.per_class, args.folder, args.data_dir):,} images to {args.folder}")
    except fid.UsageError as e:
        print("error:", e, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
