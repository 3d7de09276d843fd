"""Tiny fixture files in the real on-disk formats, loaded through the scripts' real loaders."""
import gzip
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_idx(path, array):
    """IDX as LeCun's MNIST files: magic (0, 0, dtype 0x08 = uint8, ndim), big-endian sizes, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())
    with gzip.open(str(path) + ".gz", "wb") as f:  # the download's .gz beside it, as torchvision leaves it
        f.write(header + array.tobytes())


def make_mnist(root, folder="MNIST", n_train=64, n_test=16, seed=0):
    rng = np.random.default_rng(seed)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):  # a bright square at a random place: some structure to learn
            r, c = rng.integers(4, 18, size=2)
            images[i, r:r + 8, c:c + 8] = 255
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return Path(root)


def make_cifar(root, per_batch=16, seed=0):
    """cifar-10-batches-py as the official archive unpacks: Python-2 style pickles, latin1 strings."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for j, name in enumerate(names):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[:, :1024] = j * 40  # the red plane marks the batch, so tests can see which were read
        batch = {"batch_label": f"batch {j}", "labels": [int(v) for v in rng.integers(0, 10, per_batch)],
                 "data": data, "filenames": [f"img_{j}_{i}.png" for i in range(per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                     "horse", "ship", "truck"], "num_cases_per_batch": per_batch}, f, protocol=2)
    return Path(root)


def make_folder(root, n=24, seed=0):
    """Nested and flat RGB images, one grayscale, one RGBA, one truncated and one non-image file."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        where = root if i % 3 == 0 else root / "sub" if i % 3 == 1 else root / "sub" / "deeper"
        size = (40 + i, 30 + 2 * i)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(where / f"img{i}.png")
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), mode="L").save(root / "gray.png")
    Image.fromarray(np.full((20, 20, 4), 128, np.uint8), mode="RGBA").save(root / "alpha.png")
    good = (root / "img0.png").read_bytes()
    (root / "broken.png").write_bytes(good[: len(good) // 2])
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(root / "photo.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def class_folder(root, n=48):  # 3 classes of 16 16x16 images (sub-folders): 3 steps an epoch at batch 16
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / f"class{i % 3}").mkdir(parents=True, exist_ok=True)
        img = np.full((16, 16, 3), 50 + 70 * (i % 3), np.uint8) + rng.integers(0, 30, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"class{i % 3}" / f"{i}.png")
    return root


@pytest.fixture
def mnist_dir(tmp_path):
    return make_mnist(tmp_path / "data")


@pytest.fixture
def cifar_dir(tmp_path):
    return make_cifar(tmp_path / "data")


@pytest.fixture
def image_folder(tmp_path):
    return make_folder(tmp_path / "faces")


def make_nets(module, args, channels, device="cpu", classes=0):
    """A script's networks and Adam optimisers, as its training loop makes them."""
    G, D = (m.to(device) for m in module.build(args, channels, classes))
    betas = (args.beta1, args.beta2)
    return {"G": G, "D": D, "opt_G": torch.optim.Adam(G.parameters(), args.lr_g, betas=betas),
            "opt_D": torch.optim.Adam(D.parameters(), args.lr_d, betas=betas)}


def step(module, nets, real, args, amp, n=0, labels=None, total_steps=50):  # n: steps trained before this one
    labels = torch.zeros(len(real), dtype=torch.long) if labels is None else labels  # unconditional: ignored
    return module.train_step(nets["G"], nets["D"], nets["opt_G"], nets["opt_D"], real, labels, args=args, amp=amp,
                             step=n, total_steps=total_steps)
