#!/usr/bin/env python3
"""wgan_sn.py: Wasserstein GAN with a spectrally normalised critic (Miyato et al. 2018), in one file.

    python wgan_sn.py --dataset cifar10 --epochs 20
    python wgan_sn.py --dataset fashion-mnist --conditional  # conditional BatchNorm in G, a projection critic
    python wgan_sn.py --loss wasserstein --gp 10 --n-critic 5
    python wgan_sn.py --generate 10000 --ckpt out/wgan_sn-cifar10/ckpt.pt --to samples.npz
    torchrun --standalone --nproc_per_node=4 wgan_sn.py --dataset cifar10   # 4 GPUs; --batch-size per GPU

Every critic layer is spectrally normalised (torch's parametrization), bounding its Lipschitz constant with no
weight clipping; --gp adds the WGAN-GP penalty. CIFAR-10 defaults: SN-GAN's recipe at half width, batch 32.
--diffaug color,translation,cutout (DiffAugment; off by default) augments reals and fakes alike, before the
penalty.
Measured, torch 2.14.1, FID of 10,000 EMA samples vs all 50,000 training images: 20 CIFAR-10 epochs,
seed 0, FID 41.7 in 76 min on 2 Intel Xeon cores with AVX-512 and AMX (bf16), 2026-12-06; on 2 AMD EPYC
cores with AVX-512 and bf16 an epoch took 113 s (2.2x dcgan.py's) and the code of 2026-11-27 gave 39.7
and, seed 1, 43.85.
Fashion-MNIST, 5 epochs (seed 0): every class, 40 min on the Intel cores, 2026-12-06. More: README.

Where to hack: a new loss in critic_loss() and train_step(); new networks in Generator and Critic (made
in build()); a new dataset in load_images(). Below the '# --- shared' markers: the same code in every script.
"""
import argparse, copy, csv, datetime, hashlib, io, math, os, pickle, signal, sys, time
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm
from tqdm.auto import tqdm

SCRIPT = "wgan_sn"
STEP_METRICS = ["loss_d", "loss_g", "w_dist", "gp"]  # what train_step() returns, in this order

# --- shared: flags (the same code in every script: tests/test_shared_blocks.py) ---
def number(kind, lo, hi=math.inf):  # an argparse type: a finite int or float from lo to hi
    def parse(text):
        if not (math.isfinite(value := kind(text)) and lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"{text} is not in [{lo}, {hi}]")
        return value
    parse.__name__ = kind.__name__  # argparse's message for a non-number: "invalid int value"
    return parse

class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):  # but not "None": a script fills those in
    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)

def common_flags(description, datasets):
    p = argparse.ArgumentParser(description=description, formatter_class=DefaultsShown)
    a = p.add_argument
    a("--dataset", default=datasets[0], choices=datasets, help="what to train on")
    a("--data-dir", default="data", help="torchvision's root layout; with --dataset folder, the image folder")
    a("--image-size", type=number(int, 8, 1024), default=32, help="side in pixels (conv nets: 16 to 128)")
    a("--channels", type=int, choices=[1, 3], default=None, help="1 = grayscale (default: the dataset's own)")
    a("--hflip", action="store_true", help="random horizontal flips")
    a("--jitter", type=number(float, 0, 1), default=0.0, help="random brightness/contrast change up to this")
    one, rate, beta = number(int, 1), number(float, 0, 10), number(float, 0, 0.9999)
    a("--batch-size", type=one, default=64, help="images a step; under torchrun a rank's (the global batch: "
      "this times the ranks)")
    for flag, default, kind, text in [
            ("--epochs", 20, one, "passes over the data"), ("--z-dim", 100, one, "latent size"),
            ("--lr-g", 2e-4, rate, "G's Adam learning rate"),
            ("--lr-d", 2e-4, rate, "D's Adam learning rate"),
            ("--beta1", 0.5, beta, "Adam's beta1"), ("--beta2", 0.999, beta, "Adam's beta2"),
            ("--ema-decay", 0.999, beta, "decay of the EMA of G's weights"),
            ("--seed", 0, int, "random seed")]:
        a(flag, type=kind, default=default, help=text)
    a("--noise", choices=["normal", "uniform"], default="normal", help="latent distribution")
    a("--ema", action=argparse.BooleanOptionalAction, default=True, help="sample from an EMA of G's weights")
    a("--device", default="auto", help="auto picks cuda, then mps, then cpu")
    a("--amp", action=argparse.BooleanOptionalAction, default=True,
      help="bf16 autocast where the device runs bf16 natively: CUDA GPUs of compute capability 8.0 and up "
      "(Ampere on), Apple MPS, CPUs with AVX-512 or ARM bf16; elsewhere (a T4, a V100, an AVX2 CPU), and "
      "with --no-amp, fp32 (on CUDA with TF32 matmuls and convolutions)")
    a("--compile", action="store_true", help="torch.compile the networks")
    a("--out-dir", default=None, help="default out/<script>-<dataset>")
    a("--resume", action="store_true", help="continue from <out-dir>/ckpt.pt (learning rates, betas, epochs "
      "and the other flags given now apply; those that shape the networks must match)")
    a("--ckpt-every", type=number(float, 0), default=10.0, metavar="MINUTES",
      help="a checkpoint every MINUTES of training too (0 = at epoch ends only); SIGTERM and Ctrl-C save one")
    a("--log-every", type=one, default=50, help="steps between device syncs for logging")
    a("--fid-every", type=number(int, 0), default=0, help="measure FID every K epochs (0 = never)")
    a("--fid-samples", type=number(int, 2), default=5000, help="samples (and training images) per FID")
    a("--generate", type=one, metavar="N", help="write N samples from --ckpt to --to, then exit")
    a("--ckpt", help="checkpoint for --generate (default <out-dir>/ckpt.pt)")
    a("--to", help="FILE.npz (uint8 NHWC, key x; labels: key y) or DIR/ of PNGs")
    a("--conditional", action="store_true", help="class-conditional: G and D are given the class label too")
    a("--label", help="--generate of a conditional run: a class index, or all (equal shares, the default)")
    return p
# --- end shared: flags ---

RECIPES = {"sngan": dict(beta1=0.0, beta2=0.9, g_batch_mult=2, lr_decay=True, init_std=0.02, g_width=256,
                         d_width=32, batch_size=32),  # cifar10, folder
           "gentle": dict(beta1=0.5, beta2=0.999, g_batch_mult=1, lr_decay=False, init_std=0, g_width=512,
                          d_width=64, batch_size=64)}  # mnist, fashion-mnist

def parse_args(argv=None):
    p = common_flags(__doc__.splitlines()[0], ["cifar10", "mnist", "fashion-mnist", "folder"])
    a, one = p.add_argument, number(int, 1)
    a("--loss", choices=["wasserstein", "hinge"], default="hinge", help="wasserstein needs --gp 10 here")
    a("--gp", type=number(float, 0), default=0.0, metavar="LAMBDA", help="WGAN-GP gradient penalty weight")
    a("--n-critic", type=one, default=1, help="critic updates per generator update")
    a("--diffaug", type=diffaug_policy, metavar="POLICY", help=DIFFAUG_HELP)
    for flag, how, text in [  # unset, these follow the dataset (RECIPES, listed in --help's epilog)
            ("--g-batch-mult", dict(type=one), "generator batch = this x --batch-size"),
            ("--lr-decay", dict(action=argparse.BooleanOptionalAction), "lr falls linearly to 0 in the run"),
            ("--init-std", dict(type=number(float, 0), metavar="S"), "N(0, S) weights, 0 biases; 0: torch's"),
            ("--g-width", dict(type=one), "channels of G's 4x4 layer"),
            ("--d-width", dict(type=one), "channels of the critic's first layer")]:
        a(flag, **how, default=argparse.SUPPRESS, help=text)
    # Uniform noise as in the SN-GAN paper; equal rates: a faster critic dropped Fashion-MNIST's shoes.
    p.set_defaults(noise="uniform", z_dim=128, lr_g=2e-4, lr_d=2e-4, beta1=None, beta2=None, batch_size=None)
    p.epilog = f"Unset, these follow the dataset: cifar10 and folder {RECIPES['sngan']}; mnist and " \
        f"fashion-mnist {RECIPES['gentle']}."
    args = p.parse_args(argv)
    recipe = RECIPES["gentle" if args.dataset in ("mnist", "fashion-mnist") else "sngan"]
    vars(args).update({k: v for k, v in recipe.items() if getattr(args, k, None) is None})  # flags win
    if args.generate is None and args.image_size not in (16, 32, 64, 128):
        p.error(f"argument --image-size: {args.image_size} is not a power of two from 16 to 128")
    return args

# --- Models -------------------------------------------------------------------------------------
class ClassBatchNorm(nn.BatchNorm2d):  # conditional BatchNorm (SN-GAN's): a learned scale, shift per class
    def __init__(self, channels, classes):
        super().__init__(channels, affine=False)  # the scales start at 1 and the shifts at 0, as BatchNorm's
        self.scale = nn.Embedding.from_pretrained(torch.ones(classes, channels), freeze=False)
        self.shift = nn.Embedding.from_pretrained(torch.zeros(classes, channels), freeze=False)

    def forward(self, x, y):
        return super().forward(x) * self.scale(y)[:, :, None, None] + self.shift(y)[:, :, None, None]

class Generator(nn.Sequential):  # SN-GAN's: dense to 4x4xW, [4x4 stride-2 transposed conv, BN, ReLU]s, conv
    def __init__(self, z_dim=128, image_size=32, channels=3, width=512, classes=0):
        norm = lambda c: ClassBatchNorm(c, classes) if classes else nn.BatchNorm2d(c)
        layers, ch = [nn.Linear(z_dim, 4 * 4 * width), nn.Unflatten(1, (width, 4, 4))], width
        layers += [norm(width), nn.ReLU(True)]
        for _ in range(int(math.log2(image_size)) - 2):  # from 4x4 up to image_size (a power of two)
            out = max(ch // 2, 32)
            layers += [nn.ConvTranspose2d(ch, out, 4, 2, 1), norm(out), nn.ReLU(True)]
            ch = out
        super().__init__(*layers, nn.Conv2d(ch, channels, 3, 1, 1), nn.Tanh())
        self.classes = classes

    def forward(self, z, y=None):  # y: class labels (a conditional G without them: the classes in turn)
        y = torch.arange(len(z), device=z.device) % self.classes if self.classes and y is None else y
        for layer in self:
            z = layer(z, y) if isinstance(layer, ClassBatchNorm) else layer(z)
        return z

class Critic(nn.Sequential):  # SN-GAN's 'standard CNN': 3x3 and 4x4 stride-2 convs, LeakyReLU 0.1, all SN
    def __init__(self, image_size=32, channels=3, width=64, classes=0):
        act = lambda: nn.LeakyReLU(0.1, True)
        layers, ch = [], channels
        for i in range(int(math.log2(image_size)) - 2):
            w = min(width * 2 ** i, 512)
            layers += [spectral_norm(nn.Conv2d(ch, w, 3, 1, 1)), act(),
                       spectral_norm(nn.Conv2d(w, w, 4, 2, 1)), act()]
            ch = w
        w = min(ch * 2, 512)
        layers += [spectral_norm(nn.Conv2d(ch, w, 3, 1, 1)), act(), nn.Flatten()]
        super().__init__(*layers, spectral_norm(nn.Linear(4 * 4 * w, 1)), nn.Flatten(0))  # a value per image
        if classes:  # the projection discriminator (Miyato & Koyama 2018): plus <embedding of y, features>
            self[-2].embed = spectral_norm(nn.Embedding(classes, 4 * 4 * w))  # held by the head

    def forward(self, x, y=None):  # spectral norms first, in fp32 (MPS autocast runs mv in bf16, vdot not)
        with parametrize.cached():
            with torch.autocast(x.device.type, enabled=False):
                for layer in filter(parametrize.is_parametrized, self.modules()):
                    layer.weight  # computed and cached here; the layers below read the cached value
            *features, head, _ = self
            for layer in features:
                x = layer(x)
            projection = (head.embed(y) * x).sum(1) if hasattr(head, "embed") else 0  # y: class labels
            return head(x).flatten() + projection

def build(args, channels, classes=0):  # the two networks of a run; classes: how many G and D are given
    nets = (Generator(args.z_dim, args.image_size, channels, args.g_width, classes),
            Critic(args.image_size, channels, args.d_width, classes))
    if getattr(args, "init_std", 0):  # (older checkpoints lack it; spectral norm adapts to the new weights)
        for m in (m for n in nets for m in n if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))):
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(w, 0, args.init_std)
            nn.init.zeros_(m.bias)
    return nets

# --- Training step ------------------------------------------------------------------------------
def images_per_step(args):
    return args.batch_size * args.n_critic  # each critic update sees its own real batch

def gradient_penalty(D, real, fake, y):  # WGAN-GP: E[(||grad D(x_hat)||_2 - 1)^2], x_hat between real, fake
    D = without_wrappers(D)  # uncompiled: torch.compile's backward cannot be differentiated again
    eps = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(D(x_hat, y).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()

def critic_loss(d_real, d_fake, kind):
    if kind == "hinge":
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    return d_fake.mean() - d_real.mean()  # Wasserstein: the critic maximises E[D(x)] - E[D(G(z))]

def train_step(G, D, opt_G, opt_D, reals, labels, *, args, amp, step, total_steps):
    """--n-critic critic updates, 1 G update; fakes get the labels of the reals. Returns 0-d tensors."""
    n, device = args.batch_size, reals.device
    if args.lr_decay:  # both learning rates fall linearly to 0 over the run
        for opt, lr in ((opt_G, args.lr_g), (opt_D, args.lr_d)):
            opt.param_groups[0]["lr"] = lr * max(0.0, 1 - step / total_steps)
    gp = torch.zeros((), device=device)
    for real, y in zip(reals.split(n), labels.split(n)):  # fakes get the labels of the reals
        z = sample_noise(n, args, device)
        with amp:
            with torch.no_grad():  # the critic step needs no graph through G
                fake = G(z, y)
            # augmented before the gradient penalty too, as the reference does
            real, fake = diff_augment(real, args.diffaug), diff_augment(fake, args.diffaug)
            # One critic pass over reals and fakes: it has no BatchNorm, so this equals two passes, cheaper.
            d_real, d_fake = D(torch.cat([real, fake.to(real.dtype)]), torch.cat([y, y])).float().split(n)
            loss_d = critic_loss(d_real, d_fake, args.loss)
        if args.gp:  # in fp32: the penalty's double backward is sensitive to rounding
            gp = gradient_penalty(D, real, fake.float(), y)
            loss_d = loss_d + args.gp * gp
        opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_D.step()
    z, y = sample_noise(n * args.g_batch_mult, args, device), labels[:n].repeat(args.g_batch_mult)
    D.requires_grad_(False)  # the generator step needs no gradients for the critic's weights
    D_frozen = getattr(D, "module", D)  # outside DDP: frozen weights have no gradients to all-reduce
    with amp:
        loss_g = -D_frozen(diff_augment(G(z, y), args.diffaug), y).float().mean()  # the same for both losses
    opt_G.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_G.step()
    D.requires_grad_(True)
    return [loss_d.detach(), loss_g.detach(), (d_real.mean() - d_fake.mean()).detach(), gp.detach()]

# --- shared: mnist (the same code in every script and fid.py) ---
def load_mnist(dataset, data_dir, train=True, pad=False):  # uint8 (N, 1, 28, 28), labels, class names
    from torchvision import datasets
    folder = "MNIST" if dataset == "mnist" else "FashionMNIST"
    try:  # uses the raw IDX files when they are there, downloads (md5-checked) when not
        mnist = getattr(datasets, folder)(data_dir, train=train, download=True)
    except Exception as e:  # offline, or corrupt files
        raise UsageError(f"{dataset}: expected {Path(data_dir) / folder}/raw/{'train' if train else 't10k'}-"
                         f"images-idx3-ubyte (and labels); no download ({type(e).__name__}: {e})") from None
    x = mnist.data[:, None]
    return (F.pad(x, (2, 2, 2, 2)) if pad else x), mnist.targets, mnist.classes  # pad: to 32x32 with zeros
# --- end shared: mnist ---

# --- shared: cifar10 (the same code in dcgan.py, wgan_sn.py and fid.py) ---
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"  # of the official archive, checked only on download
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

class ArrayUnpickler(pickle.Unpickler):  # CIFAR's batches are pickles: numpy arrays only, no code
    def find_class(self, module, name):
        if module not in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "_codecs") or \
                name not in ("ndarray", "dtype", "_reconstruct", "encode"):  # encode: bytes in protocol 2
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)

def load_cifar10(data_dir, train=True):  # uint8 (N, 3, 32, 32), labels, class names (torchvision wants md5s)
    folder = Path(data_dir) / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    from torchvision.datasets.utils import download_and_extract_archive
    try:
        if not all((folder / n).is_file() for n in names):
            download_and_extract_archive(CIFAR_URL, str(data_dir), md5=CIFAR_MD5)
        batches = [ArrayUnpickler(io.BytesIO((folder / n).read_bytes()), encoding="latin1").load()
                   for n in names]
        x, labels = np.concatenate([b["data"] for b in batches]), [y for b in batches for y in b["labels"]]
    except Exception as e:  # offline, or a file that is not a CIFAR-10 python batch
        raise UsageError(f"cifar10: no CIFAR-10 python batches {folder}/{{{','.join(names)}}} and no "
                         f"download of {CIFAR_URL} ({type(e).__name__}: {e})") from None
    return torch.from_numpy(x.reshape(-1, 3, 32, 32)), torch.tensor(labels), CIFAR_CLASSES
# --- end shared: cifar10 ---

# --- shared: images (datasets, grids: the same code in dcgan.py and wgan_sn.py) ---
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

def load_images(dataset, data_dir, image_size, channels=None, train=True):  # uint8 NCHW, labels, classes
    if dataset == "folder":
        return load_folder(data_dir, image_size, channels or 3)
    x, labels, classes = load_cifar10(data_dir, train) if dataset == "cifar10" else \
        load_mnist(dataset, data_dir, train, pad=image_size != 28)
    return fit_images(x, image_size, channels), labels, classes

def load_folder(folder, image_size, channels):  # every image under folder, decoded once and cached there
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    names = [p.relative_to(root).parts[0] if p.parent != root else "." for p in files]  # a sub-folder a class
    classes = sorted(set(names))  # (torchvision's ImageFolder convention; images at the top: the class ".")
    stats = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    fingerprint = hashlib.sha1(repr((stats, image_size, channels)).encode()).hexdigest()
    cache = root / f".gan-cache-{image_size}px-{channels}ch.pt"
    with suppress(Exception):  # no cache, a stale one or an unreadable one: decode
        if (cached := torch.load(cache, weights_only=True))["fingerprint"] == fingerprint:
            return cached["images"], cached["labels"], cached["classes"]
    images, labels, bad = [], [], []
    for p, name in tqdm(zip(files, names), "decoding images", len(files), unit="img", disable=not files):
        try:
            with Image.open(p) as im:
                if im.mode.startswith("I"):  # 16-bit grayscale: to 8 bits without clipping at 255
                    im = Image.fromarray((np.asarray(im) / 257).round().clip(0, 255).astype(np.uint8))
                if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:  # flatten onto white
                    im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
                t = TF.pil_to_tensor(im.convert("RGB" if channels == 3 else "L"))
            images.append(TF.center_crop(TF.resize(t, image_size, antialias=True), [image_size, image_size]))
            labels.append(classes.index(name))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            bad.append(str(p.relative_to(root)))
    if bad:
        print(f"warning: skipped {len(bad)} unreadable image(s): {', '.join(bad[:5])}", file=sys.stderr)
    if not images:
        raise UsageError(f"no usable images in {folder} (nested or flat {', '.join(sorted(IMAGE_EXTS))})")
    data = dict(images=torch.stack(images), labels=torch.tensor(labels), classes=classes)
    with suppress(UsageError):  # a read-only folder: no cache, decode again next time
        atomic_save(dict(data, fingerprint=fingerprint), cache)
    return data["images"], data["labels"], classes

EPOCH_METRICS = ["fid"]
def load_data(args):  # images, labels, class names; --diffaug left out is settled here
    x, labels, classes = load_images(args.dataset, args.data_dir, args.image_size, args.channels)
    args.diffaug, why = settle_diffaug(args)  # (the checkpoint's args record what ran)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(f"{len(x):,} images: DiffAugment {args.diffaug} ({why})")
    return x, labels, classes

# DiffAugment (Zhao et al. 2020): the same random, differentiable transforms on every image D sees, real and
# generated, in D's step and in G's, so that D cannot memorise a small dataset and G learns no augmentation.
# Off by default: on 5,000 CIFAR-10 images color,translation,cutout raised dcgan.py's FID (README).
DIFFAUG_OPS = ("color", "translation", "cutout")
DIFFAUG_HELP = (f"DiffAugment: off or a comma list of {', '.join(DIFFAUG_OPS)} (default: off; "
                "--resume keeps the run's)")

def diffaug_policy(text):  # an argparse type: off, or a comma list of DIFFAUG_OPS
    if text != "off" and not set(text.split(",")) <= set(DIFFAUG_OPS):
        raise argparse.ArgumentTypeError(f"{text}: use off or a comma list of {', '.join(DIFFAUG_OPS)}")
    return text

def settle_diffaug(args):  # -> (policy, why): a policy given wins, then a resumed run's, then off
    if args.diffaug is not None:
        return args.diffaug, "--diffaug"
    if args.resume:
        saved = load_checkpoint(Path(args.out_dir) / "ckpt.pt")["args"].get("diffaug", "off")
        return saved, "the run's, from its checkpoint; --diffaug changes it"
    return "off", "the default; --diffaug color,translation,cutout turns it on"

def diff_augment(x, policy):  # images in [-1, 1], each transformed with its own random draws
    if policy in ("off", None):  # None: not settled by load_data(), as in a step run on its own
        return x
    n, device = len(x), x.device
    ops = policy.split(",")
    if "color" in ops:  # brightness, saturation and contrast, as the reference code
        x = x + (torch.rand(n, 1, 1, 1, device=device) - 0.5)
        gray = x.mean(1, keepdim=True)
        x = (x - gray) * (2 * torch.rand(n, 1, 1, 1, device=device)) + gray
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, device=device) + 0.5) + mean
    if "translation" in ops:
        x = translate(x, 0.125)
    if "cutout" in ops:
        x = cut_out(x, 0.5)
    return x

def translate(x, ratio):  # each image moved by up to ratio of its side in each direction, zeros come in
    n, _, h, w = x.shape
    def shifts(side):  # (n, 1, 1) whole-pixel moves from -ratio * side to +ratio * side
        most = int(side * ratio + 0.5)
        return torch.randint(-most, most + 1, (n, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device)[None, :, None] + shifts(h) + 1).clamp(0, h + 1)  # into the pad
    cols = (torch.arange(w, device=x.device)[None, None, :] + shifts(w) + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # a border of zeros stands for what came in
    return padded[torch.arange(n, device=x.device)[:, None, None], rows, cols].permute(0, 3, 1, 2)

def cut_out(x, ratio):  # a square of ratio of the side set to 0, centred anywhere in each image
    n, _, h, w = x.shape
    def span(side):  # (n, 1, 1) first index of the square, and its size (it may stick out of the image)
        size = int(side * ratio + 0.5)
        return torch.randint(0, side + 1 - size % 2, (n, 1, 1), device=x.device) - size // 2, size
    (top, height), (left, width) = span(h), span(w)
    ys, xs = torch.arange(h, device=x.device)[None, :, None], torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= top) & (ys < top + height) & (xs >= left) & (xs < left + width)
    return x * (~inside)[:, None].to(x.dtype)

def batch_to_float(batch, device, args):
    return to_float(batch, device, args.hflip, args.jitter).contiguous(memory_format=memory_format(device))

def to_output(x, args):
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).byte()  # [-1, 1] -> uint8 (N, C, H, W)

@torch.no_grad()
def end_of_epoch(args, G, fixed, epoch, out):  # the fixed-noise grid and progress.png; no epoch values
    from torchvision.utils import save_image
    save_image(G(*fixed).float() / 2 + 0.5, out / "samples" / f"epoch_{epoch + 1:03d}.png")
    save_progress_strip(out)
    return {}
# --- end shared: images ---

# --- shared: skeleton (device, data, EMA, checkpoints, the loop: the same code in every script) ---
class UsageError(Exception):
    """Bad input: main() prints it as one line and exits with status 2."""

def pick_device(name):
    ok = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    name = next(k for k, there in ok.items() if there) if name == "auto" else name
    kind, _, index = name.partition(":")
    gpus = torch.cuda.device_count() if ok["cuda"] else 0
    if not ok.get(kind) or (index and not (kind == "cuda" and index.isdigit() and int(index) < gpus)):
        n = f"N below {gpus}" if gpus else "N"
        raise UsageError(f"unknown --device {name!r}, or not available (use auto, cpu, cuda, cuda:{n}, mps)")
    if kind == "cuda" and index:
        torch.cuda.set_device(int(index))  # cuda:N: the GPU of every call that assumes one
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # free speed on CUDA GPUs
    torch.backends.cudnn.benchmark = True
    return torch.device(name)

def start_ranks(device_name, timeout):  # -> (rank, ranks, device): one process is rank 0 of 1
    """Under torchrun (which sets RANK, WORLD_SIZE and LOCAL_RANK) each process is a rank of a process group:
    on CUDA it takes the GPU cuda:LOCAL_RANK; NCCL carries the GPU tensors, gloo the CPU ones. timeout: how
    long a rank waits for the others in a collective before the run stops."""
    if "RANK" not in os.environ:
        return 0, 1, pick_device(device_name)
    if device_name in ("auto", "cuda") and torch.cuda.is_available():
        device_name = f"cuda:{os.environ['LOCAL_RANK']}"
    device = pick_device(device_name)
    if device.type == "mps":
        raise UsageError("torchrun: a process group needs CUDA or the CPU (use --device cpu)")
    torch.distributed.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo",
                                         timeout=timeout)
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), device

def collective_timeout(args):  # the other ranks wait while rank 0 ends an epoch (grid, checkpoint, FID)
    fid_minutes = args.fid_samples // 100 if args.fid_every else 0  # a first FID also makes the reference's
    return datetime.timedelta(minutes=30 + fid_minutes)  # statistics: 2 x N images through Inception

def wait_for_rank_0(ranks):  # a barrier: an all-reduce of a CPU tensor goes through gloo, also beside NCCL
    agree([0], ranks)

def load_data_once(args, rank, ranks):  # rank 0 loads first (downloads, decodes, caches); the rest read that
    if rank > 0:
        wait_for_rank_0(ranks)
    loaded = load_data(args)
    if rank == 0:
        wait_for_rank_0(ranks)
    return loaded

def agree(values, ranks):  # the largest of each int over all ranks: every rank acts on them at the same step
    if ranks == 1:
        return values
    largest = torch.tensor(values)
    torch.distributed.all_reduce(largest, torch.distributed.ReduceOp.MAX)
    return largest.tolist()

def for_training(model, args, device, ranks):  # the network as train_step() calls it: compiled, in DDP
    if args.compile:
        model = torch.compile(model)
    if ranks == 1:
        return model
    # Each rank keeps its own BatchNorm statistics (README.md, "More than one GPU"): no buffers are sent at
    # each forward, only at the start (torch 2.14 renamed broadcast_buffers to forward_sync_buffers).
    gpu = [device.index] if device.type == "cuda" else None
    try:
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=gpu, forward_sync_buffers=False)
    except TypeError:
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=gpu, broadcast_buffers=False)

def without_wrappers(model):  # the network inside DDP and torch.compile (a penalty differentiates it twice)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)

def bf16_is_native(kind, capability):  # emulated bf16 runs slower than fp32: 37x on an AVX2-only CPU
    """kind: cuda, mps or cpu; capability: a CUDA GPU's (major, minor), or a CPU's oneDNN bf16 (bool)."""
    if kind == "cuda":
        return capability >= (8, 0)  # Ampere and newer; a T4 or a V100 emulates bf16
    return kind == "mps" or (kind == "cpu" and capability)  # CPU: AVX-512 or ARM's bf16 instructions

def autocast(device, enabled):  # bf16 mixed precision where the device runs bf16 natively, else fp32
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
    else:  # a CPU: oneDNN's bf16 kernels, as torch's own tests ask (MPS needs no capability)
        capability = device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    with suppress(RuntimeError, ValueError):  # an older MPS backend has no bf16 autocast
        if enabled and bf16_is_native(device.type, capability):
            return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()

def memory_format(device):  # channels_last (NHWC) speeds up convolutions on CUDA and CPU, slows them on MPS
    return torch.channels_last if device.type in ("cuda", "cpu") else torch.contiguous_format

def adam(model, lr, args):  # fused (one kernel for the whole update) where this torch has it for the device
    try:
        return torch.optim.Adam(model.parameters(), lr, betas=(args.beta1, args.beta2), fused=True)
    except RuntimeError:
        return torch.optim.Adam(model.parameters(), lr, betas=(args.beta1, args.beta2))

def device_rng_state(device):  # a GPU's random stream: noise, flips and jitter are drawn there
    return None if device.type == "cpu" else (device.type, torch.get_device_module(device).get_rng_state())

def sample_noise(n, args, device, generator=None):  # n latent vectors: uniform in [-1, 1] or standard normal
    if args.noise == "uniform":
        return torch.rand(n, args.z_dim, generator=generator, device=device) * 2 - 1
    return torch.randn(n, args.z_dim, generator=generator, device=device)

def grid_inputs(args, classes, device):  # the fixed noise and labels of every epoch's grid
    z = sample_noise(64, args, "cpu", torch.Generator().manual_seed(args.seed + 1))
    if args.conditional:  # a row per class (the first 10), the same noise in each column
        z = z[:8].repeat(min(len(classes), 10), 1)
    y = torch.arange(len(z)) // 8 % len(classes)  # (an unconditional G ignores labels)
    return z.to(device), y.to(device)

def fit_images(x, image_size, channels=None):  # uint8 (N, C, H, W) in the run's --channels and --image-size
    if channels == 1 and x.shape[1] == 3:
        x = (x.float() * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, True).round().byte()
    return TF.resize(x.expand(-1, channels or -1, -1, -1).contiguous(), [image_size] * 2, antialias=True)

def place_data(data, labels, device):  # the whole dataset on the device: no DataLoader in the hot loop
    if data.nbytes > 2 ** 31:  # over 2 GiB it stays in CPU memory: each batch goes over alone
        return data, labels
    return data.to(device), labels.to(device)

def epoch_order(seed, epoch, n, device):  # from the seed and the epoch alone: a resume needs only pos
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 999 + epoch)).to(device)

def rank_batch(data, labels, order, pos, size, rank, ranks):  # this rank's slice of step pos's images
    start = (pos * ranks + rank) * size
    batch = order[start:start + size]
    return data[batch], labels[batch]

def to_float(batch, device, hflip=False, jitter=0.0):  # uint8 -> [-1, 1] on the device, augmented per batch
    x = batch.to(device, non_blocking=True).float().div_(127.5).sub_(1)
    if hflip:
        x = torch.where(torch.rand(len(x), 1, 1, 1, device=device) < 0.5, x.flip(3), x)
    if jitter:
        u = lambda: (torch.rand(len(x), 1, 1, 1, device=device) * 2 - 1) * jitter
        mean = x.mean((1, 2, 3), keepdim=True)
        x = ((x - mean) * (1 + u()) + mean + 2 * u()).clamp_(-1, 1)
    return x

def run_steps(start_epoch, start_pos, epochs, steps_per_epoch):  # (epoch, position in it) of each step left
    for epoch in range(start_epoch, epochs):
        for pos in range(start_pos if epoch == start_epoch else 0, steps_per_epoch):
            yield epoch, pos

def progress_bar(start_epoch, start_pos, epochs, steps_per_epoch, rank):  # run_steps(), shown on rank 0
    steps_left = run_steps(start_epoch, start_pos, epochs, steps_per_epoch)
    return tqdm(steps_left, total=epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch + start_pos,
                unit="step", dynamic_ncols=True, disable=rank > 0)

@torch.no_grad()
def update_ema(ema, model, step, decay):  # a lower decay at first: short runs do not sample the random init
    torch._foreach_lerp_([*ema.parameters()], [*model.parameters()], 1 - min(decay, (1 + step) / (10 + step)))
    for e, m in zip(ema.buffers(), model.buffers()):  # BatchNorm's statistics as they are
        e.copy_(m)

@torch.no_grad()
def standing_stats(G, args, device, batches=16):  # the EMA G's BatchNorm statistics from its own samples
    # (as BigGAN): the live G's do not fit the averaged weights, which made early samples dark and uniform
    rng = torch.Generator(device).manual_seed(0)  # fixed noise; training's random stream stays untouched
    z = [sample_noise(args.batch_size, args, device, rng) for _ in range(batches)]
    torch.optim.swa_utils.update_bn(z, G)
    return G

def step_values(unlogged, ranks, out, step):  # the steps' values since the last log (a row a step) on the CPU
    values = torch.stack(unlogged).float()
    if ranks > 1:  # the mean over the ranks; a NaN on any rank reaches every rank: all stop at the same step
        torch.distributed.all_reduce(values)
        values /= ranks
    values = values.cpu()  # a device sync, once per --log-every steps
    if not values.isfinite().all():
        kept = out / "ckpt.pt" if (out / "ckpt.pt").exists() else "none yet"
        raise FloatingPointError(f"a loss is NaN or infinite near step {step} (lower lr?); "
                                 f"last good checkpoint: {kept}")
    return values

class MetricsLog:  # metrics.csv: a row a step and a row an epoch, written with each checkpoint
    def __init__(self, path, step, resume):
        self.path = path
        self.fields = ["kind", "epoch", "step", "time"] + STEP_METRICS + ["img_per_s"] + EPOCH_METRICS
        self.rows = [] if resume and path.is_file() else [self.fields]  # the header starts a new file
        self.since_time = time.perf_counter()  # images per second are measured from here
        self.since_step = step

    def add_steps(self, values, epoch, step, images_per_step):  # values: a row of STEP_METRICS a step
        speed = (step - self.since_step) * images_per_step / (time.perf_counter() - self.since_time)
        for i, row in enumerate(values.tolist(), step - len(values) + 1):
            numbers = [f"{v:.5g}" for v in row] + [f"{speed:.1f}"]
            self.rows.append(["step", epoch + 1, i, int(time.time())] + numbers)
        self.since_time = time.perf_counter()
        self.since_step = step

    def latest(self):  # the last step's values, for the progress bar
        last = next(row for row in reversed(self.rows) if row[0] == "step")
        return dict(zip(STEP_METRICS + ["img_per_s"], last[4:]))

    def add_epoch(self, epoch, step, values):  # values: EPOCH_METRICS by name ("" for those not measured)
        numbers = [values.get(k, "") for k in self.fields[4:]]
        self.rows.append(["epoch", epoch + 1, step, int(time.time())] + numbers)

    def write(self):  # after ckpt.pt: no row is ever ahead of the checkpoint
        padded = [row + [""] * (len(self.fields) - len(row)) for row in self.rows]
        with open(self.path, "w" if self.rows[:1] == [self.fields] else "a", newline="") as f:
            csv.writer(f).writerows(padded)
        self.rows.clear()

def atomic_save(obj, path):  # via a temporary file: a kill at any moment leaves the old file intact
    try:
        with open(f"{path}.tmp", "wb") as f:
            torch.save(obj, f)
            os.fsync(f.fileno())
        os.replace(f"{path}.tmp", path)
    except (OSError, RuntimeError) as e:  # a full disk, a read-only folder: the old file stays, no .tmp
        Path(f"{path}.tmp").unlink(missing_ok=True)
        raise UsageError(f"could not write {path} ({type(e).__name__}: {e})") from None

def save_checkpoint(out, nets, metrics, *, args, classes, channels, step, epoch, pos, images_per_step,
                    device):
    """ckpt.pt: nets' states, the flags, the dataset's classes and the place in the run; then metrics.csv."""
    states = {}
    for name, net in nets.items():
        states[name] = None if net is None else net.state_dict()
    atomic_save(dict(states, script=SCRIPT, args=dict(vars(args), classes=classes), channels=channels,
                     step=step, epoch=epoch, pos=pos, images_per_step=images_per_step,
                     rng=torch.get_rng_state(), device_rng=device_rng_state(device)), out / "ckpt.pt")
    metrics.write()

def take_lock(path):  # True when this process created the file ("x": only one process can create it)
    try:
        with open(path, "x") as f:
            f.write(str(os.getpid()))
        return True
    except FileExistsError:
        return False

def lock_holder(path):  # the PID in a lock file while that process lives; else None, and the file is removed
    try:
        pid = int(path.read_text())
        if os.name != "nt":  # signal 0 only asks if it lives (on Windows it would be Ctrl-C)
            os.kill(pid, 0)
        return pid
    except (ValueError, ProcessLookupError, FileNotFoundError):  # no PID, or no such process: stale
        path.unlink(missing_ok=True)
        return None

@contextmanager
def run_lock(out, rank=0):  # one run per output folder: run.lock holds its PID; a dead run's is taken over
    if rank > 0:  # rank 0 alone writes the folder
        yield
        return
    path = out / "run.lock"
    while not take_lock(path):
        pid = lock_holder(path)
        if pid is not None:
            raise UsageError(f"{out} is in use by process {pid} (one run per folder; if none, delete {path})")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)

class StopRequest:  # Ctrl-C or SIGTERM: a checkpoint after this step, then exit 128 + the signal
    def __init__(self):
        self.signal = 0  # the signal's number; 0: none

    def handle(self, sig, frame):  # a second Ctrl-C stops at once; a repeated SIGTERM (a scheduler's, then
        if self.signal and sig == signal.SIGINT:  # torchrun's) never interrupts the checkpoint
            raise KeyboardInterrupt
        if self.signal:
            return
        tqdm.write(f"{signal.Signals(sig).name}: saving a checkpoint", file=sys.stderr)
        self.signal = sig

@contextmanager
def stop_requests():  # the handlers of Ctrl-C and SIGTERM while training; the previous ones after
    stop = StopRequest()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, stop.handle)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

def load_checkpoint(path, args=None):  # weights_only: a file cannot run code; --resume: shapes must match
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        script = checkpoint["script"]
    except Exception as e:
        raise UsageError(f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:80]})") from None
    if script != SCRIPT:
        raise UsageError(f"{path} was written by {script}.py; load it with that script")
    checkpoint["args"] = {"conditional": False, "classes": ["."], **checkpoint["args"]}  # (older: no classes)
    for k in "dataset image_size channels z_dim noise g_width d_width depth pack conditional".split():
        saved = checkpoint["args"].get(k)
        if hasattr(args, k) and saved != getattr(args, k):
            raise UsageError(f"--resume: the checkpoint has --{k.replace('_', '-')} {saved}")
    return checkpoint

def load_states(checkpoint, nets):  # its state dicts into nets (name: a module or an optimiser, or None)
    try:
        for k, m in nets.items():
            if m is not None and checkpoint.get(k) is not None:
                m.load_state_dict(checkpoint[k])
    except (RuntimeError, KeyError, ValueError) as e:
        raise UsageError(f"the checkpoint does not fit this model ({str(e)[:150]})") from None

def resume_state(path, args, nets, *, classes, images_per_step, rank, device):  # -> (step, epoch, pos)
    """Where the run starts: at 0, or with --resume where the checkpoint left off (its states into nets)."""
    if not args.resume:
        return 0, 0, 0
    checkpoint = load_checkpoint(path, args)
    if args.conditional and checkpoint["args"]["classes"] != classes:  # the labels would mean other classes
        saved = checkpoint["args"]["classes"]
        changed = [f"{i}: {a} -> {b}" for i, (a, b) in enumerate(zip(saved, classes)) if a != b]
        if len(saved) != len(classes):
            changed.append(f"{len(saved)} classes -> {len(classes)}")
        raise UsageError(f"--resume: the dataset's classes are not the checkpoint's: {', '.join(changed)}")
    saved = checkpoint.get("images_per_step", images_per_step)  # older checkpoints: kept at epoch ends only
    if checkpoint["pos"] and saved != images_per_step:
        raise UsageError(f"--resume in mid-epoch needs the same {saved} images a step (--batch-size times "
                         f"the ranks), not {images_per_step}; or resume from the next epoch's checkpoint")
    load_states(checkpoint, nets)
    torch.set_rng_state(checkpoint["rng"])
    gpu_rng = checkpoint.get("device_rng")  # (kind, state) of a GPU's random stream, or None
    if gpu_rng is not None and gpu_rng[0] == device.type:
        torch.get_device_module(device).set_rng_state(gpu_rng[1])
    if rank > 0:  # the other ranks draw noise of their own, not rank 0's
        torch.manual_seed(args.seed + rank + 1000 * checkpoint["step"])
    for opt, lr in ((nets["opt_G"], args.lr_g), (nets["opt_D"], args.lr_d)):  # the flags given now apply
        opt.param_groups[0].update(lr=lr, betas=(args.beta1, args.beta2))
    if rank == 0:
        print(f"resumed from {path} at epoch {checkpoint['epoch'] + 1}, step {checkpoint['step']}")
    return checkpoint["step"], checkpoint["epoch"], checkpoint["pos"]

def prepare_out_dir(out, resume):  # never overwrite a run by accident
    if (out / "ckpt.pt").exists() != resume:
        raise UsageError(f"--resume: no checkpoint in {out}" if resume else
                         f"{out} already holds a run: add --resume to continue it, or pick another --out-dir")
    (out / "samples").mkdir(parents=True, exist_ok=True)

def check_run(args, n_data, classes, images_per_step, device):  # one line before any work for a bad start
    if n_data < images_per_step:  # an epoch's partial last batch is dropped: BatchNorm wants full ones
        raise UsageError(f"the dataset has {n_data} examples, fewer than the {images_per_step} a step needs")
    if args.conditional and len(classes) < 2:
        raise UsageError(f"--conditional: {args.dataset} has one class (a folder: a sub-folder a class)")
    if args.compile and device.type == "mps" and torch.__version__ < "2.8":
        raise UsageError(f"--compile on MPS needs torch 2.8 or newer (this is {torch.__version__})")

def load_fid_network(args, channels, device):  # first: missing weights are an error before any work
    if not (args.fid_every and channels):  # (no FID of 2-D points)
        return None
    import fid
    return fid.load_inception(device=device)

def measure_fid(G, args, data, fid_net, device, epoch):  # -> (FID as text or "", an error line or None)
    import fid

    @torch.no_grad()
    def sample(n):
        return to_output(G(sample_noise(n, args, device)), args)
    try:
        value = f"{fid.fid_of_sampler(sample, args.fid_samples, data, fid_net):.3f}"
    except Exception as e:  # raised after the epoch's checkpoint
        return "", f"FID failed ({type(e).__name__}: {e}); --resume continues"
    print(f"epoch {epoch + 1}: FID {value} ({args.fid_samples} samples)")
    return value, None

def plot_metrics(out):  # metrics.png: running means of the losses and of the other step values; epoch values
    import matplotlib.pyplot as plt
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    panels = [[c for c in STEP_METRICS if "loss" in c], [c for c in STEP_METRICS if "loss" not in c]]
    panels += [[c] for c in EPOCH_METRICS if any(r[c] for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False, layout="tight")
    for ax, cols in zip(axes[0], panels):
        for c in cols:
            x, y = np.array([(float(r["step"]), float(r[c])) for r in rows if r[c]]).reshape(-1, 2).T
            k = max(1, len(y) // 50) if c in STEP_METRICS else 1  # running mean: raw GAN losses are noisy
            ax.plot(x[k - 1:], np.convolve(y, np.ones(k) / k, "valid"), "-" if k > 1 else ".", label=c)
        ax.set(xlabel="step")
        ax.legend()
    fig.savefig(out / "metrics.png", dpi=80)
    plt.close(fig)

def save_progress_strip(out):  # progress.png: the top rows of up to 16 epoch grids, the earliest on top
    files = sorted((out / "samples").glob("epoch_*.png"))
    picks = dict.fromkeys(files[round(i * (len(files) - 1) / 15)] for i in range(16))
    rows = [np.array(Image.open(f).convert("RGB")) for f in picks]  # grids: 8 square images a row, 2 px gaps
    Image.fromarray(np.concatenate([r[:(r.shape[1] - 2) // 8 + 2] for r in rows])).save(out / "progress.png")

def train(args):
    rank, ranks, device = start_ranks(args.device, collective_timeout(args))
    out = Path(args.out_dir)
    prepare_out_dir(out, args.resume)
    torch.manual_seed(args.seed)  # the same on every rank: networks_on_device() reseeds ranks > 0
    data, labels, classes = load_data_once(args, rank, ranks)
    channels = data.shape[1] if data.dim() == 4 else None  # None: 2-D points
    per_step = images_per_step(args)  # one rank's images in one step
    steps_per_epoch = len(data) // (per_step * ranks)  # each rank its own slice of a step's images
    check_run(args, len(data), classes, per_step * ranks, device)
    fid_net = load_fid_network(args, channels, device) if rank == 0 else None
    data, labels = place_data(data, labels, device)
    G, D = networks_on_device(args, channels, len(classes) if args.conditional else 0, device, rank)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if args.ema and rank == 0 else None
    opt_G, opt_D = adam(G, args.lr_g, args), adam(D, args.lr_d, args)
    nets = dict(G=G, D=D, G_ema=G_ema, opt_G=opt_G, opt_D=opt_D)  # what a checkpoint holds
    step, start_epoch, start_pos = resume_state(out / "ckpt.pt", args, nets, classes=classes,
                                                images_per_step=per_step * ranks, rank=rank, device=device)
    G_train, D_train = for_training(G, args, device, ranks), for_training(D, args, device, ranks)
    amp = autocast(device, args.amp)
    metrics = MetricsLog(out / "metrics.csv", step, args.resume)
    unlogged = []  # the step values not yet logged, on the device
    order = None  # this epoch's order of the dataset
    next_save = time.monotonic() + 60 * (args.ckpt_every or math.inf)
    with run_lock(out, rank), stop_requests() as stop:
        bar = progress_bar(start_epoch, start_pos, args.epochs, steps_per_epoch, rank)
        for epoch, pos in bar:
            if pos == 0 or order is None:  # a new epoch, or the first step of a resumed one
                order = epoch_order(args.seed, epoch, len(data), data.device)
                bar.set_description(f"epoch {epoch + 1}/{args.epochs}")
            x, y = rank_batch(data, labels, order, pos, per_step, rank, ranks)
            reals, y = batch_to_float(x, device, args), y.to(device)
            place = epoch * steps_per_epoch + pos  # in the run at this batch: schedules survive a new one
            step_metrics = train_step(G_train, D_train, opt_G, opt_D, reals, y, args=args, amp=amp,
                                      step=place, total_steps=args.epochs * steps_per_epoch)
            unlogged.append(torch.stack(step_metrics))
            step += 1
            if G_ema is not None:
                update_ema(G_ema, G, step, args.ema_decay)
            stop_signal, save_due = agree([stop.signal, int(time.monotonic() > next_save)], ranks)
            epoch_ends = pos + 1 == steps_per_epoch  # then its own checkpoint follows its evaluation
            log_now = len(unlogged) >= args.log_every or stop_signal or save_due or epoch_ends
            if log_now:  # on every rank: the values' all-reduce
                logged = step_values(unlogged, ranks, out, step)
                unlogged = []
            if log_now and rank == 0:  # rank 0 alone writes metrics.csv
                metrics.add_steps(logged, epoch, step, per_step * ranks)
                bar.set_postfix(metrics.latest())
            save_now = (stop_signal or save_due) and not epoch_ends  # (it keeps the place in the epoch)
            if save_now and G_ema is not None:  # (rank 0 alone keeps the EMA)
                standing_stats(G_ema, args, device)
            if save_now and rank == 0:
                save_checkpoint(out, nets, metrics, args=args, classes=classes, channels=channels, step=step,
                                epoch=epoch, pos=pos + 1, images_per_step=per_step * ranks, device=device)
            if save_due:
                next_save = time.monotonic() + 60 * args.ckpt_every
            if stop_signal and (not epoch_ends or rank > 0):
                stop_after_checkpoint(stop_signal, out, step, rank, ranks)
            if not epoch_ends or rank > 0:  # the rest: the end of an epoch, on rank 0 alone
                continue
            scores, fid_error = evaluate_epoch(G, G_ema, args, classes, epoch, out, fid_net, data, device)
            metrics.add_epoch(epoch, step, scores)
            save_checkpoint(out, nets, metrics, args=args, classes=classes, channels=channels, step=step,
                            epoch=epoch + 1, pos=0, images_per_step=per_step * ranks, device=device)
            plot_metrics(out)
            if fid_error:
                raise UsageError(fid_error)
            if stop_signal:
                stop_after_checkpoint(stop_signal, out, step, rank, ranks)
    if rank == 0:
        print(f"done: {step} steps; outputs in {out}/")

def networks_on_device(args, channels, classes, device, rank):  # G and D, the same on every rank
    G, D = build(args, channels, classes)  # under the run's seed (DDP sends the weights, not every buffer)
    if rank > 0:
        torch.manual_seed(args.seed + rank)  # then each rank draws noise of its own
    layout = memory_format(device)
    return G.to(device, memory_format=layout), D.to(device, memory_format=layout)

def evaluate_epoch(G, G_ema, args, classes, epoch, out, fid_net, data, device):  # -> (values, FID error)
    """The grid, this script's epoch values and the FID when due, from the EMA G or from G in eval mode."""
    G.eval()  # BatchNorm's running statistics: samples do not depend on the rest of their batch
    sampler = G if G_ema is None else standing_stats(G_ema, args, device)
    epoch_metrics = end_of_epoch(args, sampler, grid_inputs(args, classes, device), epoch, out)
    fid_error = None
    if fid_net is not None and (epoch + 1) % args.fid_every == 0:
        epoch_metrics["fid"], fid_error = measure_fid(sampler, args, data, fid_net, device, epoch)
    G.train()
    return epoch_metrics, fid_error

def stop_after_checkpoint(signal_number, out, step, rank, ranks):  # every rank exits 128 + the signal
    if rank == 0:
        tqdm.write(f"saved {out}/ckpt.pt at step {step}; --resume continues", file=sys.stderr)
    wait_for_rank_0(ranks)  # torchrun stops the other ranks when one exits: none does before the checkpoint
    sys.exit(128 + signal_number)

@torch.no_grad()
def generate(args):  # --generate N: the EMA generator's samples as uint8 NHWC (.npz, key x) or PNG files
    checkpoint = load_checkpoint(args.ckpt or Path(args.out_dir) / "ckpt.pt")
    points = checkpoint["channels"] is None  # 2-D points: .npz only
    if not args.to or (points and not args.to.endswith(".npz")):
        raise UsageError("--generate needs --to FILE.npz or --to DIR/ (for 2-D points: FILE.npz)")
    saved_args = argparse.Namespace(**checkpoint["args"])
    device = pick_device(args.device)
    classes = len(saved_args.classes) if saved_args.conditional else 0
    if args.label is not None and not classes:
        raise UsageError("--label: the checkpoint is not conditional (trained without --conditional)")
    if args.label not in [None, "all"] + [str(k) for k in range(classes)]:
        raise UsageError(f"--label {args.label}: use 0 to {classes - 1} or all")
    G = build(saved_args, checkpoint["channels"], classes)[0].to(device).eval()
    load_states(checkpoint, {"G_ema" if checkpoint["G_ema"] else "G": G})
    torch.manual_seed(args.seed)
    y = torch.arange(args.generate) % len(saved_args.classes)  # equal shares, or all of --label's class
    if args.label not in (None, "all"):
        y = torch.full_like(y, int(args.label))
    x = torch.cat([to_output(G(sample_noise(len(b), saved_args, device), b.to(device)), saved_args).cpu()
                   for b in tqdm(y.split(500), "generating")])
    x = (x.permute(0, 2, 3, 1) if x.dim() == 4 else x).numpy()  # images as NHWC
    (Path(args.to).parent if args.to.endswith(".npz") else Path(args.to)).mkdir(parents=True, exist_ok=True)
    if args.to.endswith(".npz"):
        labelled = {"y": y.numpy()} if classes else {}
        np.savez(args.to, x=x, **labelled)
    else:
        for i, img in enumerate(x):
            TF.to_pil_image(img).save(f"{args.to}/{i:06d}" + (f"_class{y[i]}.png" if classes else ".png"))
    print(f"wrote {len(x)} samples {x.dtype} {x.shape} to {args.to}")

def exit_status(error):  # 1: a run stopped (a NaN, another rank); 2: bad input or an OS error; None: a bug
    if isinstance(error, (FloatingPointError, torch.distributed.DistError)):
        return 1
    if type(error).__name__ == "UsageError" or isinstance(error, OSError):  # (fid.py has a UsageError too)
        return 2
    return None

def main(argv=None):
    args = parse_args(argv)
    args.out_dir = args.out_dir or f"out/{SCRIPT}-{args.dataset}"
    try:
        if args.generate is not None:
            generate(args)
        else:
            train(args)
    except Exception as e:
        status = exit_status(e)
        if status is None:  # a bug: the traceback
            raise
        said = " ".join(str(e).split())  # one line, one write (ranks share the terminal)
        print(f"stopped: {said}" if status == 1 else f"error: {said}", file=sys.stderr)
        sys.exit(status)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
# --- end shared: skeleton ---

if __name__ == "__main__":
    main()
