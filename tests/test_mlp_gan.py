"""mlp_gan.py: the mode metrics on hand-made point sets, a short 2-D run, and the image path."""
import csv
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import mlp_gan
from conftest import ROOT, make_nets, step


def test_mode_metrics_all_modes():
    centres, std = mlp_gan.mixture("grid25")
    points = centres.repeat(4, 1) + 0.5 * std  # every sample 0.71 std from its mode
    modes, hq, kl = mlp_gan.mode_metrics(points, centres, std)
    assert (modes, hq) == (25, 100.0) and kl == pytest.approx(0.0, abs=1e-9)


def test_mode_metrics_one_mode():
    centres, std = mlp_gan.mixture("ring8")
    points = centres[3].repeat(100, 1)
    modes, hq, kl = mlp_gan.mode_metrics(points, centres, std)
    assert (modes, hq) == (1, 100.0) and kl == pytest.approx(np.log(8))


def test_mode_metrics_far_from_every_mode():
    centres, std = mlp_gan.mixture("grid25")
    points = torch.tensor([[1.0, 1.0], [3.0, -1.0], [100.0, 100.0]])  # between modes, and far away
    modes, hq, kl = mlp_gan.mode_metrics(points, centres, std)
    assert (modes, hq) == (0, 0.0) and np.isnan(kl)


def test_mode_metrics_mixed_counts():
    centres, std = mlp_gan.mixture("grid25")
    step = torch.tensor([[std, 0.0]])
    near = torch.cat([centres[:2], centres[:1] + 2.9 * step, centres[4:5] + 3.1 * step])  # last one is not HQ
    modes, hq, kl = mlp_gan.mode_metrics(near, centres, std)
    p = np.array([2 / 3, 1 / 3])
    assert (modes, hq) == (2, 75.0) and kl == pytest.approx(float((p * np.log(p * 25)).sum()))


def test_mixtures_are_what_the_benchmarks_define():
    g, std = mlp_gan.mixture("grid25")
    assert std == 0.05 and g.shape == (25, 2) and sorted(set(g[:, 0].tolist())) == [-4, -2, 0, 2, 4]
    r, std = mlp_gan.mixture("ring8")
    assert std == 0.02 and torch.allclose(r.norm(dim=1), torch.full((8,), 2.0))
    x = mlp_gan.sample_mixture("grid25", 5000, "cpu")
    # A perfect generator: P(|x - mode| <= 3 std) in 2-D is 1 - exp(-9/2) = 98.9%
    assert mlp_gan.mode_metrics(x, g, 0.05)[:2] == (25, pytest.approx(98.89, abs=0.6))


def test_packing_gives_one_logit_per_pack():
    D = mlp_gan.MLPDiscriminator(2, width=8, depth=2, pack=4)
    assert D(torch.randn(12, 2)).shape == (3,)


def test_r1_penalty_on_a_linear_discriminator():
    # D(x) = w.x + b has gradient w everywhere: the penalty is |w|^2 per D input (per pack when packed).
    D = mlp_gan.MLPDiscriminator(2, width=4, depth=0, pack=2)
    w = D.net[0].weight.detach().flatten()
    assert torch.allclose(mlp_gan.r1_penalty(D, torch.randn(8, 2), None, pack=2), w.pow(2).sum())


def test_r1_every_k_applies_the_penalty_on_every_kth_d_update(monkeypatch):
    args = mlp_gan.parse_args(["--r1", "1", "--r1-every", "3", "--batch-size", "8", "--g-width", "4", "--d-width", "4"])
    nets = make_nets(mlp_gan, args, None)
    calls = []
    real_r1 = mlp_gan.r1_penalty
    monkeypatch.setattr(mlp_gan, "r1_penalty", lambda *a: calls.append(1) or real_r1(*a))
    for n in range(7):
        step(mlp_gan, nets, mlp_gan.sample_mixture("grid25", 8, "cpu"), args, mlp_gan.autocast(torch.device("cpu"), False), n)
    assert len(calls) == 2  # updates 3 and 6


def test_ctrl_c_and_resume_continue_the_lr_schedule_and_lazy_r1_exactly(tmp_path, monkeypatch):
    argv = ["--steps-per-epoch", "10", "--batch-size", "32", "--g-width", "16", "--d-width", "16",
            "--r1-every", "3", "--log-every", "5", "--epochs", "3", "--device", "cpu"]
    mlp_gan.main(argv + ["--out-dir", str(tmp_path / "straight")])
    real_step, calls = mlp_gan.train_step, {"n": 0}

    def interrupted_step(*a, **k):  # Ctrl-C during step 14: the checkpoint is taken after it
        calls["n"] += 1
        if calls["n"] == 14:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*a, **k)
    monkeypatch.setattr(mlp_gan, "train_step", interrupted_step)
    with pytest.raises(SystemExit):
        mlp_gan.main(argv + ["--out-dir", str(tmp_path / "split")])
    monkeypatch.setattr(mlp_gan, "train_step", real_step)
    mlp_gan.main(argv + ["--out-dir", str(tmp_path / "split"), "--resume"])
    a, b = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in ("straight", "split"))
    for k in ("G", "D", "G_ema"):
        assert all(torch.equal(a[k][n], b[k][n]) for n in a[k])
    assert a["opt_G"]["param_groups"][0]["lr"] == b["opt_G"]["param_groups"][0]["lr"] < 1e-3  # decayed


def test_short_grid25_run_beats_the_untrained_generator(tmp_path):
    argv = ["--epochs", "2", "--steps-per-epoch", "400", "--out-dir", str(tmp_path / "r"), "--log-every", "50"]
    args = mlp_gan.parse_args(argv)
    torch.manual_seed(args.seed)
    untrained = mlp_gan.build(args, None)[0]
    centres, std = mlp_gan.mixture("grid25")
    with torch.no_grad():
        before = mlp_gan.mode_metrics(untrained(torch.randn(2500, args.z_dim)), centres, std)
    mlp_gan.main(argv)
    rows = [r for r in csv.DictReader(open(tmp_path / "r" / "metrics.csv")) if r["kind"] == "epoch"]
    last = rows[-1]
    # (The untrained G puts everything near (0, 0): one mode, all "high quality", KL = log 25.)
    assert int(last["modes"]) > before[0] + 5 and float(last["kl"]) < before[2] - 1
    for name in ("metrics.png", "progress.png", "samples/epoch_002.png", "ckpt.pt"):
        assert (tmp_path / "r" / name).is_file()
    r = subprocess.run([sys.executable, str(ROOT / "mlp_gan.py"), "--generate", "7", "--ckpt",
                        str(tmp_path / "r" / "ckpt.pt"), "--to", str(tmp_path / "p.npz")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pts = np.load(tmp_path / "p.npz")["x"]
    assert pts.shape == (7, 2) and pts.dtype == np.float32


def test_image_path_end_to_end(mnist_dir, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "mlp_gan.py"), "--dataset", "mnist", "--data-dir", str(mnist_dir),
                        "--epochs", "2", "--batch-size", "16", "--lite", "--g-width", "16", "--d-width", "16",
                        "--out-dir", str(tmp_path / "m")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in ("metrics.csv", "metrics.png", "progress.png", "samples/epoch_002.png", "ckpt.pt"):
        assert (tmp_path / "m" / name).is_file(), name
    r = subprocess.run([sys.executable, str(ROOT / "mlp_gan.py"), "--generate", "3", "--ckpt",
                        str(tmp_path / "m" / "ckpt.pt"), "--to", str(tmp_path / "pngs")], capture_output=True, text=True)
    assert r.returncode == 0 and len(list((tmp_path / "pngs").glob("*.png"))) == 3
