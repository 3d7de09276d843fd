"""Training and evaluation speed: `pytest bench/ --benchmark-only` (BENCH_ROUNDS=20 for steadier numbers).

Each benchmark times one full training step of a script's default model (D update(s) and G update)
on every device present, with the device synchronised inside the timed function. The textbook
DCGAN step (pytorch/examples dcgan/main.py and the PyTorch DCGAN tutorial: a DataLoader over a
torchvision-style dataset with per-sample PIL transforms, a Sigmoid output and BCELoss) sits in the
same group as dcgan.py's own step at 64x64, batch 64, both including their data loading.
"""
import copy
import itertools
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dcgan  # noqa: E402
import explore  # noqa: E402
import fid  # noqa: E402
import mlp_gan  # noqa: E402
import wgan_sn  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
DEVICES = [pytest.param("cpu"),
           pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")),
           pytest.param("mps", marks=pytest.mark.skipif(not torch.backends.mps.is_available(), reason="no MPS"))]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def run(benchmark, fn, device, images_per_call):
    def timed():
        fn()
        sync(device)
    fn()  # warm-up: kernel selection, allocator, lazy init
    sync(device)
    benchmark.pedantic(timed, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info["device"] = str(device)
    benchmark.extra_info["torch"] = torch.__version__
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["img_per_s"] = round(images_per_call / benchmark.stats.stats.mean, 1)


def script_step(module, argv, channels, device, data):
    """The script's own step, data included: index the on-device uint8 dataset, augment, train."""
    args = module.parse_args(argv + ["--device", str(device)])
    device = module.pick_device(args.device)  # as the scripts: cudnn.benchmark and TF32 on CUDA
    G, D = module.build(args, channels, 10 if args.conditional else 0)  # (10 classes, as CIFAR-10)
    G = G.to(device, memory_format=module.memory_format(device))
    D = D.to(device, memory_format=module.memory_format(device))
    G_ema = copy.deepcopy(G).requires_grad_(False) if args.ema else None
    opt_G = module.adam(G, args.lr_g, args)  # as the scripts' loop: fused where torch has it
    opt_D = module.adam(D, args.lr_d, args)
    amp = module.autocast(device, args.amp)
    per_step = module.images_per_step(args)
    data = data.to(device) if data is not None else None
    n = len(data) if data is not None else per_step
    total_steps = args.epochs * (n // per_step)  # as train() gives it (wgan_sn's lr decay reads it)

    calls = itertools.count()

    def step():
        idx = torch.randint(n, (per_step,), device=device)
        batch = data[idx] if data is not None else torch.zeros(per_step, 0)
        real = module.batch_to_float(batch, device, args)
        labels = torch.randint(10, (per_step,), device=device)  # (an unconditional run ignores them)
        module.train_step(G, D, opt_G, opt_D, real, labels, args=args, amp=amp, step=next(calls),
                          total_steps=total_steps)
        if G_ema is not None:
            module.update_ema(G_ema, G, 1000, args.ema_decay)
    return step, per_step


def fake_images(n, channels, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("precision", ["default", "fp32"])  # the script's (bf16 where native), --no-amp
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model,argv,channels,size", [
    ("mlp_gan-2d", [], None, None),
    ("mlp_gan-mnist", ["--dataset", "mnist"], 1, 28),
    ("dcgan-32", ["--image-size", "32"], 3, 32),
    ("dcgan-32-diffaug", ["--image-size", "32", "--diffaug", "color,translation,cutout"], 3, 32),
    ("dcgan-64", ["--image-size", "64"], 3, 64),
    ("wgan_sn-32", ["--image-size", "32"], 3, 32),
    ("dcgan-32-conditional", ["--image-size", "32", "--conditional"], 3, 32),  # 10 classes
    ("wgan_sn-32-conditional", ["--image-size", "32", "--conditional"], 3, 32),
])
def test_train_step(benchmark, device, model, argv, channels, size, precision):
    module = {"mlp": mlp_gan, "dcg": dcgan, "wga": wgan_sn}[model[:3]]
    device = torch.device(device)
    benchmark.group = f"{model.removesuffix('-conditional').removesuffix('-diffaug')}-{device}-{precision}"
    benchmark.name = f"{model}[{device}-{precision}]"
    data = fake_images(2048, channels, size) if channels else None
    flags = argv + (["--no-amp"] if precision == "fp32" else [])
    step, per_step = script_step(module, flags, channels, device, data)
    run(benchmark, step, device, per_step)


class ArrayDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: uint8 HWC array -> PIL image -> transform."""

    def __init__(self, images_hwc, transform):
        self.images, self.transform = images_hwc, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), 0


def textbook_models(device):
    """pytorch/examples dcgan/main.py at 64x64: the same networks as dcgan.py's, D ending in a Sigmoid."""
    G = dcgan.Generator(100, 64, 3, 64).to(device)
    D = torch.nn.Sequential(dcgan.Discriminator(64, 3, 64), torch.nn.Sigmoid()).to(device)
    return G, D


@pytest.mark.parametrize("device", DEVICES)
def test_textbook_dcgan_step_64(benchmark, device):
    import torchvision.transforms as T
    device = torch.device(device)
    benchmark.group = f"dcgan-64-{device}-fp32"  # the textbook step has no autocast
    benchmark.name = f"textbook-dcgan-64[{device}]"
    try:  # real CIFAR-10 when it is unpacked under ./data, else random images of the same shape
        images = dcgan.load_cifar10("data", True)[0][:10000].permute(0, 2, 3, 1).numpy()
    except dcgan.UsageError:
        images = fake_images(10000, 3, 32).permute(0, 2, 3, 1).numpy()
    transform = T.Compose([T.Resize(64), T.CenterCrop(64), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    loader = torch.utils.data.DataLoader(ArrayDataset(images, transform), batch_size=64, shuffle=True,
                                         num_workers=2, persistent_workers=True, drop_last=True)
    G, D = textbook_models(device)
    criterion = torch.nn.BCELoss()
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    batches = iter(loader)

    def step():
        nonlocal batches
        try:
            real, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            real, _ = next(batches)
        real = real.to(device)
        b = real.size(0)
        label = torch.full((b,), 1.0, device=device)
        D.zero_grad()
        err_real = criterion(D(real), label)
        err_real.backward()
        fake = G(torch.randn(b, 100, device=device))
        label.fill_(0.0)
        err_fake = criterion(D(fake.detach()), label)
        err_fake.backward()
        opt_D.step()
        G.zero_grad()
        label.fill_(1.0)
        criterion(D(fake), label).backward()
        opt_G.step()
    run(benchmark, step, device, 64)


@pytest.mark.parametrize("device", DEVICES)
def test_fid_feature_throughput(benchmark, device):
    device = torch.device(device)
    benchmark.group = f"fid-{device}"
    net = fid.FIDInception().eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
    batch = fake_images(32, 3, 32)  # on the CPU, as fid.py gets them; speed does not depend on the weights

    def features():  # what fid.py runs: to the device, resize, Inception, features back to the CPU
        fid.extract(net, batch, batch_size=len(batch))
    run(benchmark, features, device, len(batch))


def test_frechet_distance_2048(benchmark):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4096, 2048)), rng.normal(0.1, 1.1, size=(4096, 2048))
    stats = fid.statistics(a) + fid.statistics(b)
    benchmark.group = "fid-frechet"
    value = benchmark.pedantic(lambda: fid.frechet_distance(*stats), rounds=max(1, ROUNDS // 2), warmup_rounds=0)
    assert value > 0


def test_explore_grid_of_64(benchmark, tmp_path):
    """explore.py's answer to the page's default request, /api/grid?n=64, over HTTP: dcgan.py's default
    32x32 generator on the CPU (explore.py's default device), the grid and its PNG."""
    import http.client
    import threading
    args = dcgan.parse_args(["--dataset", "cifar10"])
    G = dcgan.build(args, 3)[0]
    torch.save(dict(script="dcgan", args=vars(args), channels=3, G=G.state_dict(), G_ema=None, epoch=0, step=0),
               tmp_path / "ckpt.pt")
    server = explore.make_server(explore.Run(tmp_path), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    benchmark.group = "explore-cpu"

    def grid():
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
        connection.request("GET", "/api/grid?n=64&seed=1")
        assert connection.getresponse().read()[:4] == b"\x89PNG"
    try:
        run(benchmark, grid, torch.device("cpu"), 64)
    finally:
        server.shutdown()
        server.server_close()
