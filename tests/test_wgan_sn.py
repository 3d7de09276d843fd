"""wgan_sn.py: spectral norm, the gradient penalty, the step, a tiny end-to-end run, resumes and the lr schedule."""
import csv
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import wgan_sn
from conftest import ROOT, class_folder, make_nets, step

CPU = torch.device("cpu")


def test_spectral_norm_bounds_every_critic_layer():
    torch.manual_seed(0)
    D = wgan_sn.Critic(image_size=32, channels=3, width=16)
    layers = [m for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 8 and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    with torch.no_grad():
        for _ in range(30):  # each training-mode forward runs one power iteration per layer
            D(torch.randn(2, 3, 32, 32))
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.05)
        raw = torch.linalg.matrix_norm(m.parametrizations.weight.original.detach().flatten(1), ord=2).item()
        assert raw != pytest.approx(1.0, abs=0.05)  # the raw weight is not normalised: the parametrization is


def test_gradient_penalty_is_per_sample():
    # D(x) = sum(x^2) per sample: grad = 2x. Real == fake, so x_hat = x for any mixing coefficient.
    x = torch.zeros(2, 1, 2, 2)
    x[0, 0, 0, 0] = 1.0  # |x| = 1 -> |grad| = 2 -> (2 - 1)^2 = 1
    x[1, 0, 0, 0] = 2.0  # |x| = 2 -> |grad| = 4 -> (4 - 1)^2 = 9
    gp = wgan_sn.gradient_penalty(lambda v, y: (v ** 2).flatten(1).sum(1), x, x.clone(), None)
    assert gp.item() == pytest.approx(5.0)  # a batch-wide norm would give (sqrt(20) - 1)^2 = 12.06


def test_gradient_penalty_of_a_linear_critic():
    w = torch.tensor([3.0, 4.0])  # |w| = 5 -> penalty (5 - 1)^2 = 16 wherever it is evaluated
    gp = wgan_sn.gradient_penalty(lambda v, y: v @ w, torch.randn(8, 2), torch.randn(8, 2), None)
    assert gp.item() == pytest.approx(16.0)


@pytest.mark.parametrize("loss,gp", [("wasserstein", 0.0), ("hinge", 0.0), ("wasserstein", 10.0)])
def test_one_step_updates_both_networks(loss, gp):
    args = wgan_sn.parse_args(["--batch-size", "4", "--g-width", "32", "--d-width", "8", "--loss", loss,
                               "--gp", str(gp), "--image-size", "16"])
    nets = make_nets(wgan_sn, args, 3)
    # (The critic's output bias gets no gradient from a difference of means, under either loss's
    # generator term, so only the Wasserstein critic loss leaves it fixed; it is left out here.)
    params = lambda k: [p for p in nets[k].parameters() if p is not nets["D"][-2].bias]
    before = {k: [p.detach().clone() for p in params(k)] for k in ("G", "D")}
    out = step(wgan_sn, nets, torch.rand(4, 3, 16, 16) * 2 - 1, args, wgan_sn.autocast(CPU, True))
    assert all(torch.isfinite(v) for v in out) and (out[3] > 0) == (gp > 0)
    for k in ("G", "D"):
        assert all(not torch.equal(a, b) for a, b in zip(before[k], params(k))), k


def test_recipe_follows_the_dataset_and_flags_win():
    keys = lambda a: (a.n_critic, a.beta1, a.beta2, a.g_batch_mult, a.lr_decay, a.init_std, a.g_width, a.d_width,
                      a.batch_size)
    rgb, gray = wgan_sn.parse_args(["--dataset", "cifar10"]), wgan_sn.parse_args(["--dataset", "fashion-mnist"])
    assert keys(rgb) == (1, 0.0, 0.9, 2, True, 0.02, 256, 32, 32)
    assert keys(gray) == (1, 0.5, 0.999, 1, False, 0, 512, 64, 64)
    mixed = wgan_sn.parse_args(["--dataset", "cifar10", "--beta1", "0.5", "--no-lr-decay", "--init-std", "0",
                                "--batch-size", "64"])
    assert keys(mixed) == (1, 0.5, 0.9, 2, False, 0, 256, 32, 64)
    assert wgan_sn.parse_args(["--dataset", "mnist", "--beta2", "0.99"]).beta2 == 0.99


def test_init_std_sets_every_weight_of_both_networks():
    torch.manual_seed(0)
    G, D = wgan_sn.build(wgan_sn.parse_args(["--init-std", "0.02"]), 3)
    layers = [m for m in (*G, *D) if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(layers) == 5 + 8
    for m in layers:  # the critic's raw weight is the parameter that spectral norm divides
        w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
        assert w.std().item() == pytest.approx(0.02, rel=0.1) and not m.bias.any()
    torch.manual_seed(0)
    default = wgan_sn.build(wgan_sn.parse_args(["--init-std", "0"]), 3)[1]
    assert default[0].parametrizations.weight.original.std().item() > 0.1  # torch's kaiming-uniform for 3x3x3


def test_lr_decay_falls_linearly_to_zero_over_the_run():
    args = wgan_sn.parse_args(["--batch-size", "2", "--g-width", "32", "--d-width", "8", "--image-size", "16",
                               "--epochs", "2"])
    nets = make_nets(wgan_sn, args, 1)
    lrs = []
    for n in (0, 5, 10):  # a run of 2 epochs of 5 steps
        step(wgan_sn, nets, torch.rand(2, 1, 16, 16), args, wgan_sn.autocast(CPU, False), n, total_steps=10)
        lrs.append([nets[k].param_groups[0]["lr"] for k in ("opt_G", "opt_D")])
    assert lrs == [[2e-4, 2e-4], [1e-4, 1e-4], [0.0, 0.0]]


def test_n_critic_5_does_five_critic_steps_per_generator_step():
    args = wgan_sn.parse_args(["--batch-size", "2", "--g-width", "32", "--d-width", "8", "--n-critic", "5",
                               "--image-size", "16", "--g-batch-mult", "2", "--no-lr-decay"])
    assert wgan_sn.images_per_step(args) == 10
    nets = make_nets(wgan_sn, args, 1)
    seen = []  # batch sizes of the critic's forward passes
    real_forward = nets["D"].forward

    def counting(x, y=None):
        seen.append(len(x))
        return real_forward(x, y)
    nets["D"].forward = counting
    step(wgan_sn, nets, torch.rand(10, 1, 16, 16), args, wgan_sn.autocast(CPU, False))
    first = lambda opt: int(next(iter(opt.state.values()))["step"])
    assert first(nets["opt_D"]) == 5 and first(nets["opt_G"]) == 1
    # Five critic passes over 2 reals + 2 fakes each, then one over the generator's 2 x 2 fakes.
    assert seen == [4] * 5 + [4]
    assert all(p.requires_grad for p in nets["D"].parameters())  # the G step gives them back


def test_cli_end_to_end(cifar_dir, tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, str(ROOT / "wgan_sn.py"), "--dataset", "cifar10", "--data-dir", str(cifar_dir),
                        "--epochs", "2", "--image-size", "16", "--batch-size", "8", "--g-width", "32",
                        "--d-width", "8", "--gp", "1", "--out-dir", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in ("metrics.csv", "metrics.png", "progress.png", "ckpt.pt", "samples/epoch_002.png"):
        assert (out / name).is_file(), name
    steps = [r for r in csv.DictReader(open(out / "metrics.csv")) if r["kind"] == "step"]
    # 80 fixture images, 1 critic batch of 8 per generator step (the cifar10 default): 10 steps an epoch
    assert len(steps) == 20 and all(float(r["gp"]) > 0 for r in steps)
    r = subprocess.run([sys.executable, str(ROOT / "wgan_sn.py"), "--generate", "5", "--ckpt", str(out / "ckpt.pt"),
                        "--to", str(tmp_path / "s.npz")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "s.npz")["x"].shape == (5, 16, 16, 3)
    r = subprocess.run([sys.executable, str(ROOT / "dcgan.py"), "--generate", "5", "--ckpt", str(out / "ckpt.pt"),
                        "--to", str(tmp_path / "d.npz")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "written by wgan_sn.py" in r.stderr


def folder_run(folder, out, *flags):  # wgan_sn.py's folder defaults (SN-GAN's recipe: lr decay), tiny
    wgan_sn.main(["--dataset", "folder", "--data-dir", str(folder), "--image-size", "16", "--g-width", "32",
                  "--d-width", "8", "--device", "cpu", "--no-amp", "--ckpt-every", "0", "--out-dir", str(out),
                  *map(str, flags)])


def saved_states(path):
    ck = torch.load(path, weights_only=True)
    return {k: ck[k] for k in ("G", "D", "G_ema", "opt_G", "opt_D")}


def same(a, b):  # nested state dicts, tensors compared exactly
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def recording_steps(monkeypatch, stop_at=0):  # train_step() that logs (lr G, lr D) and sends SIGTERM once
    real_step, lrs, calls = wgan_sn.train_step, [], {"n": 0}

    def recorded_step(G, D, opt_G, opt_D, *a, **k):
        calls["n"] += 1
        if calls["n"] == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        values = real_step(G, D, opt_G, opt_D, *a, **k)
        lrs.append((opt_G.param_groups[0]["lr"], opt_D.param_groups[0]["lr"]))
        return values
    monkeypatch.setattr(wgan_sn, "train_step", recorded_step)
    return lrs


def test_a_resume_with_the_default_lr_decay_repeats_an_unbroken_run_ema_included(tmp_path, monkeypatch):
    folder = class_folder(tmp_path / "data")  # 48 images, batch 8: 6 steps an epoch
    folder_run(folder, tmp_path / "straight", "--batch-size", 8, "--epochs", 2)
    recording_steps(monkeypatch, stop_at=4)  # SIGTERM in mid-epoch
    with pytest.raises(SystemExit):
        folder_run(folder, tmp_path / "split", "--batch-size", 8, "--epochs", 2)
    assert torch.load(tmp_path / "split" / "ckpt.pt", weights_only=True)["step"] == 4
    folder_run(folder, tmp_path / "split", "--batch-size", 8, "--epochs", 2, "--resume")
    straight, split = saved_states(tmp_path / "straight" / "ckpt.pt"), saved_states(tmp_path / "split" / "ckpt.pt")
    assert straight["opt_G"]["param_groups"][0]["lr"] < 2e-4  # the decay ran
    assert all(same(straight[k], split[k]) for k in straight)


def test_a_stop_on_an_epochs_last_step_ends_the_epoch_and_a_resume_with_twice_the_batch_keeps_the_schedule(
        tmp_path, monkeypatch):
    """SIGTERM in the last step of epoch 1 (of 3): the epoch's grid, row and checkpoint (pos 0) are made
    before the stop, so the run resumes with another batch; every step after that has the learning rates of
    an unbroken run with the new batch at the same place in the run."""
    folder = class_folder(tmp_path / "data")
    lrs = recording_steps(monkeypatch)
    folder_run(folder, tmp_path / "straight", "--batch-size", 16, "--epochs", 3)  # 3 steps an epoch
    straight = lrs[:]
    recording_steps(monkeypatch, stop_at=6)  # batch 8: 6 steps an epoch
    with pytest.raises(SystemExit) as e:
        folder_run(folder, tmp_path / "split", "--batch-size", 8, "--epochs", 3)
    assert e.value.code == 128 + signal.SIGTERM
    out = tmp_path / "split"
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert (ck["epoch"], ck["pos"], ck["step"]) == (1, 0, 6)
    assert (out / "samples" / "epoch_001.png").is_file()
    assert [r["step"] for r in csv.DictReader(open(out / "metrics.csv")) if r["kind"] == "epoch"] == ["6"]
    lrs = recording_steps(monkeypatch)
    folder_run(folder, out, "--batch-size", 16, "--epochs", 3, "--resume")
    assert len(lrs) == 6 and lrs == straight[3:]
