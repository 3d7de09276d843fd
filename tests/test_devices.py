"""What a GPU or a Mac would show, tested where a CPU can: bf16 only where a device runs it natively,
compiled networks with a double-backward penalty, --device cuda:N, the GPU's random stream in checkpoints,
FID features per batch, the critic's spectral norms outside MPS autocast. GPU-only tests skip without one."""
import copy
from contextlib import nullcontext

import numpy as np
import pytest
import torch

import dcgan
import fid
import mlp_gan
import wgan_sn

CPU = torch.device("cpu")
GPUS = [pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")),
        pytest.param("mps", marks=pytest.mark.skipif(not torch.backends.mps.is_available(), reason="no MPS"))]
TINY = ["--dataset", "mnist", "--image-size", "16", "--g-width", "8", "--d-width", "8", "--batch-size", "16",
        "--log-every", "2"]  # 64 images: 4 steps an epoch


@pytest.mark.parametrize("kind,capability,native", [
    ("cuda", (6, 0), False), ("cuda", (7, 0), False), ("cuda", (7, 5), False),  # P100, V100, T4: emulated
    ("cuda", (8, 0), True), ("cuda", (8, 6), True), ("cuda", (9, 0), True), ("cuda", (12, 0), True),
    ("cpu", False, False), ("cpu", True, True), ("mps", None, True), ("xpu", None, False)])
def test_bf16_only_where_the_device_runs_it_natively(kind, capability, native):
    assert dcgan.bf16_is_native(kind, capability) is native


def test_amp_on_the_cpu_follows_onednn_and_off_is_fp32():
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert isinstance(dcgan.autocast(CPU, True), torch.autocast if bf16 else nullcontext)
    assert isinstance(dcgan.autocast(CPU, False), nullcontext)


@pytest.mark.parametrize("name", ["cuda:99", "cuda:x", "cuda:", "cpu:0", "mps:1", "tpu"])
def test_a_device_that_is_not_there_is_one_line_with_status_2(name, capsys):
    with pytest.raises(SystemExit) as e:
        dcgan.main([*TINY, "--device", name, "--out-dir", "unused"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and f"unknown --device '{name}'" in err


@pytest.mark.parametrize("name", ["cuda:99", "tpu", "mps:7"])
def test_fid_py_says_a_missing_device_in_one_line(name, capsys):
    with pytest.raises(SystemExit) as e:
        fid.main(["--device", name, "cifar10:test", "cifar10:train"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and f"--device {name} is not available" in err


def test_cuda_and_cuda_n_on_a_machine_with_two_gpus(monkeypatch):  # the CUDA calls stubbed, on any machine
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert dcgan.pick_device("cuda") == torch.device("cuda") and chosen == []  # the current GPU, untouched
    assert dcgan.pick_device("auto") == torch.device("cuda") and chosen == []
    assert dcgan.pick_device("cuda:1") == torch.device("cuda:1") and chosen == [1]
    with pytest.raises(dcgan.UsageError, match="cuda:N below 2"):
        dcgan.pick_device("cuda:2")


def test_compiled_networks_train_with_r1_and_with_the_gradient_penalty(mnist_dir, tmp_path):
    # aot_autograd cannot differentiate a compiled backward again: the penalties use the eager module.
    mlp_gan.main(["--compile", "--steps-per-epoch", "3", "--epochs", "1", "--r1-every", "1", "--batch-size", "32",
                  "--g-width", "16", "--d-width", "16", "--device", "cpu", "--out-dir", str(tmp_path / "mlp")])
    wgan_sn.main([*TINY, "--compile", "--gp", "10", "--epochs", "1", "--data-dir", str(mnist_dir),
                  "--device", "cpu", "--out-dir", str(tmp_path / "wgan")])
    assert torch.load(tmp_path / "mlp" / "ckpt.pt", weights_only=True)["step"] == 3
    rows = (tmp_path / "wgan" / "metrics.csv").read_text().splitlines()
    gp = [float(r.split(",")[7]) for r in rows[1:] if r.startswith("step")]
    assert rows[0].split(",")[7] == "gp" and len(gp) == 4 and all(v > 0 for v in gp)


def test_the_cpu_random_stream_is_saved_on_its_own():
    assert dcgan.device_rng_state(CPU) is None  # the checkpoint's "rng" holds it


@pytest.mark.parametrize("kind", GPUS)
def test_a_gpu_random_stream_round_trips(kind):
    device = dcgan.pick_device(kind)
    saved_kind, state = dcgan.device_rng_state(device)
    first = torch.randn(8, device=device)
    torch.get_device_module(device).set_rng_state(state)
    assert saved_kind == kind and torch.equal(first, torch.randn(8, device=device))


@pytest.mark.parametrize("kind", GPUS)
def test_a_resume_on_a_gpu_continues_its_random_stream(kind, mnist_dir, tmp_path):
    common = [*TINY, "--hflip", "--data-dir", str(mnist_dir), "--device", kind]
    dcgan.main(common + ["--epochs", "2", "--out-dir", str(tmp_path / "straight")])
    dcgan.main(common + ["--epochs", "1", "--out-dir", str(tmp_path / "split")])
    dcgan.main(common + ["--epochs", "2", "--out-dir", str(tmp_path / "split"), "--resume"])
    a, b = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in ("straight", "split"))
    assert a["step"] == b["step"] == 8 and a["device_rng"][0] == kind
    assert torch.equal(a["device_rng"][1], b["device_rng"][1])  # the same draws, in the same order


class TinyInception(torch.nn.Module):  # fid.extract's contract: forward(x, logits=True) -> (features, logits)
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x, logits=False):
        x = x.float() * self.scale
        return x.flatten(1)[:, :4], x.mean((1, 2, 3))[:, None]


def test_fid_features_come_back_as_float64_on_the_cpu_batch_by_batch():
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    features, logits = fid.extract(TinyInception(), images, batch_size=3)
    assert isinstance(features, np.ndarray) and features.dtype == logits.dtype == np.float64
    assert features.shape == (10, 4) and logits.shape == (10, 1)
    np.testing.assert_array_equal(features, images.flatten(1)[:, :4].double().numpy() * 0.5)


def test_the_critics_fp32_spectral_norms_equal_the_plain_layers():
    # The critic computes its spectral norms first, outside autocast (on MPS they would fail inside it); on the
    # CPU, whose autocast runs them in fp32 anyway, that equals running its layers plainly, in and out of it.
    torch.manual_seed(0)
    cached = wgan_sn.Critic(image_size=16, channels=3, width=8)
    plain = copy.deepcopy(cached)
    x = torch.randn(4, 3, 16, 16)
    for amp in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out_plain, out_cached = torch.nn.Sequential.forward(plain, x), cached(x)
        out_plain.float().sum().backward()
        out_cached.float().sum().backward()
        assert torch.equal(out_plain, out_cached)
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(plain.parameters(), cached.parameters()))
        assert all(torch.equal(a, b) for a, b in zip(plain.buffers(), cached.buffers()))  # u, v of each layer


def test_the_mode_centres_are_built_once_per_device():
    centres, _ = mlp_gan.mixture("grid25", CPU)
    assert mlp_gan.mixture("grid25", CPU)[0] is centres and centres.shape == (25, 2)
    assert mlp_gan.sample_mixture("ring8", 5, CPU).shape == (5, 2)
