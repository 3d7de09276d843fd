#!/usr/bin/env python3
"""class_accuracy.py: does a conditional GAN draw the class it is asked for? A classifier trained on the real
images judges its samples.

    python dcgan.py --dataset mnist --conditional --epochs 20
    python dcgan.py --generate 10000 --ckpt out/dcgan-mnist/ckpt.pt --to samples.npz     # 1,000 a class
    python bench/class_accuracy.py samples.npz --dataset mnist

The first run for a dataset trains a small CNN on its real training set and prints its accuracy on the real
test set; the weights are cached (--classifier, default out/classifier-<dataset>.pt). Then, for each class
in the samples' labels (key y of the .npz that --generate writes), the share of its samples that the
classifier assigns to that class, and the mean of those shares. Samples of any size and channel count are
brought to the classifier's 32x32 (28x28 ones are padded, as the scripts pad MNIST).
"""
import argparse, sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import dcgan  # noqa: E402  (the datasets' loaders)

EPOCHS = {"mnist": 3, "fashion-mnist": 6, "cifar10": 15}  # enough for about 99%, 92% and 85% on the test sets


def classifier(channels, width):  # three blocks of two 3x3 convs with BatchNorm, each halving the side
    layers, ch = [], channels
    for w in (width, 2 * width, 4 * width):
        layers += [nn.Conv2d(ch, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(True),
                   nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(True), nn.MaxPool2d(2)]
        ch = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, 10))


def to_input(x, channels):  # uint8 NCHW of any size -> float [-1, 1] NCHW, 32x32, the classifier's channels
    if x.shape[-1] == 28:
        x = F.pad(x, (2, 2, 2, 2))
    return dcgan.fit_images(x, 32, channels).float() / 127.5 - 1


@torch.no_grad()
def predict(net, x, channels, batch=500):
    net.eval()
    return torch.cat([net(to_input(b, channels)).argmax(1) for b in x.split(batch)])


def train_classifier(dataset, data_dir, path, seed=0):
    torch.manual_seed(seed)
    x, y, _ = dcgan.load_images(dataset, data_dir, 32)
    channels, epochs = x.shape[1], EPOCHS[dataset]
    net = classifier(channels, 32 if dataset == "cifar10" else 16)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    steps = epochs * (len(x) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    bar = tqdm(total=steps, desc=f"training a {dataset} classifier", unit="step")
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x))[:len(x) // 128 * 128].split(128):
            batch = to_input(x[idx], channels)
            if dataset == "cifar10":  # random flips and 4-pixel shifts
                batch = torch.where(torch.rand(len(batch), 1, 1, 1) < 0.5, batch.flip(3), batch)
                i, j = np.random.randint(0, 9, 2)
                batch = F.pad(batch, (4, 4, 4, 4), value=-1)[..., i:i + 32, j:j + 32]
            loss = F.cross_entropy(net(batch), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    test_x, test_y, _ = dcgan.load_images(dataset, data_dir, 32, train=False)
    accuracy = (predict(net, test_x, channels) == test_y).float().mean().item()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(dataset=dataset, channels=channels, net=net.state_dict(), test_accuracy=accuracy), path)
    return net


def fail(message):  # one line, exit status 2
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("samples", help=".npz from --generate of a conditional run (keys x and y)")
    p.add_argument("--dataset", choices=list(EPOCHS), required=True, help="the real data the run trained on")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--classifier", help="weights file (default out/classifier-<dataset>.pt; made if missing)")
    args = p.parse_args(argv)
    path = Path(args.classifier or f"out/classifier-{args.dataset}.pt")
    try:
        samples = np.load(args.samples)
        x, y = torch.from_numpy(samples["x"]).permute(0, 3, 1, 2), torch.from_numpy(samples["y"]).long()
    except (OSError, KeyError, ValueError) as e:
        fail(f"{args.samples}: not an .npz with x (NHWC uint8) and y, as --generate of a conditional run "
             f"writes ({type(e).__name__}: {e})")
    try:
        if not path.is_file():
            train_classifier(args.dataset, args.data_dir, path)
        ck = torch.load(path, weights_only=True)
    except (dcgan.UsageError, OSError, RuntimeError, KeyError) as e:  # no data, or an unreadable classifier
        fail(f"{e}" if isinstance(e, dcgan.UsageError) else f"{path}: {type(e).__name__}: {e}")
    if ck["dataset"] != args.dataset:
        fail(f"{path} is a {ck['dataset']} classifier, not {args.dataset}")
    net = classifier(ck["channels"], ck["net"]["0.weight"].shape[0])
    net.load_state_dict(ck["net"])
    predicted = predict(net, x, ck["channels"])
    print(f"classifier {path}: {100 * ck['test_accuracy']:.2f}% on the real {args.dataset} test set")
    shares = []
    for k in y.unique().tolist():
        shares.append((predicted[y == k] == k).float().mean().item())
        print(f"class {k}: {int((y == k).sum())} samples, {100 * shares[-1]:.1f}% classified as {k}")
    print(f"mean over {len(shares)} classes: {100 * np.mean(shares):.1f}% classified as their label")


if __name__ == "__main__":
    main()
