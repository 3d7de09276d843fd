"""dcgan.py and wgan_sn.py under torchrun: two CPU ranks (gloo) on a tiny image folder.

Each run is a real `python -m torch.distributed.run --standalone --nproc_per_node=2` with one thread a rank.
A small wrapper around the script records its networks, so that each rank can write its G at the end."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan
import wgan_sn
from conftest import ROOT

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not sys.platform.startswith("linux"),
                                reason="needs torch.distributed with gloo, POSIX signals and /proc")

SMALL = {"dcgan": ["--g-width", "8", "--d-width", "8"], "wgan_sn": ["--g-width", "32", "--d-width", "8"]}
WRAPPER = """
import os, sys, torch
sys.path.insert(0, {root!r})
import {script} as script
built = []
real_build = script.build
def build(*args):  # the networks of this rank, to write G at the end
    built.append(real_build(*args))
    return built[-1]
script.build = build
if os.environ.get("NAN_ON_RANK") == os.environ["RANK"]:  # this rank's losses turn NaN
    real_step = script.train_step
    script.train_step = lambda *a, **k: [v * float("nan") for v in real_step(*a, **k)]
try:
    script.main(sys.argv[1:])
finally:
    if built:
        torch.save(built[0][0].state_dict(), os.path.join({out!r}, "G_rank" + os.environ["RANK"] + ".pt"))
"""


def class_folder(root, n=48):  # 3 classes of 16 16x16 images: 3 steps an epoch for 2 ranks of 8
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / f"class{i % 3}").mkdir(parents=True, exist_ok=True)
        img = np.full((16, 16, 3), 50 + 70 * (i % 3), np.uint8) + rng.integers(0, 30, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"class{i % 3}" / f"{i}.png")
    return root


def torchrun(script, tmp_path, *flags, wait=True, env=None, wait_ok=True):
    out = tmp_path / "run"
    out.mkdir(exist_ok=True)
    wrapper = tmp_path / f"ranked_{script}.py"
    wrapper.write_text(WRAPPER.format(root=str(ROOT), script=script, out=str(tmp_path)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(wrapper),
               "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--image-size", "16",
               "--batch-size", "8", "--device", "cpu", "--no-amp", "--out-dir", str(out), *SMALL[script], *flags]
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert (done.returncode == 0) == wait_ok, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def metric_rows(out, kind):
    return [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv")) if r["kind"] == kind]


def children(pid):  # the PIDs whose parent is pid (from /proc: Linux)
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(name)": state, then the parent's PID
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def wait_for(path, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline, f"no {path} after {seconds} s"
        time.sleep(0.2)


@pytest.mark.parametrize("script,flags", [("dcgan", ["--conditional"]), ("wgan_sn", [])])
def test_two_ranks_train_one_run_with_the_global_batch_and_a_single_process_resumes(tmp_path, script, flags):
    class_folder(tmp_path / "data")
    said = torchrun(script, tmp_path, "--epochs", "2", *flags)
    out = tmp_path / "run"
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert ck["step"] == 6 and ck["epoch"] == 2  # 48 images, a global batch of 2 x 8: 3 steps an epoch
    assert ck["images_per_step"] == 16 and ck["args"]["classes"] == ["class0", "class1", "class2"]
    assert metric_rows(out, "step") == [1, 2, 3, 4, 5, 6] and metric_rows(out, "epoch") == [3, 6]  # once each
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert said.count("done: 6 steps") == 1  # rank 0 alone speaks
    ranks = [torch.load(tmp_path / f"G_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0] if "running" not in k)  # DDP kept them
    assert all(torch.equal(ranks[0][k], ck["G"][k]) for k in ranks[0])  # the checkpoint holds rank 0's G
    module = dcgan if script == "dcgan" else wgan_sn  # one process with the global batch continues
    module.main(["--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--image-size", "16",
                 "--batch-size", "16", "--device", "cpu", "--no-amp", "--out-dir", str(out), *SMALL[script],
                 *flags, "--epochs", "3", "--resume"])
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 9
    assert metric_rows(out, "step") == list(range(1, 10))


def test_sigterm_to_torchrun_stops_both_ranks_at_one_step_with_a_checkpoint_that_resumes(tmp_path):
    class_folder(tmp_path / "data")
    run = torchrun("dcgan", tmp_path, "--epochs", "1000", wait=False)
    out = tmp_path / "run"
    wait_for(out / "samples" / "epoch_002.png", run)
    os.kill(run.pid, signal.SIGTERM)  # as a scheduler or `kill` would: torchrun passes it on to each rank
    said = run.communicate(timeout=90)[0]
    assert run.returncode != 0 and "--resume continues" in said, said[-3000:]
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert ck["epoch"] >= 2 and ck["step"] == 3 * ck["epoch"] + ck["pos"]
    rows = metric_rows(out, "step")
    assert rows == list(range(1, ck["step"] + 1))  # each step once, none past the checkpoint
    assert not (out / "run.lock").exists()
    dcgan.main(["--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--image-size", "16",
                "--batch-size", "16", "--device", "cpu", "--no-amp", "--out-dir", str(out), *SMALL["dcgan"],
                "--epochs", str(ck["epoch"] + 1), "--resume"])
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 3 * (ck["epoch"] + 1)


def test_a_killed_rank_stops_the_other_without_a_hang(tmp_path):
    class_folder(tmp_path / "data")
    run = torchrun("dcgan", tmp_path, "--epochs", "1000", wait=False)
    wait_for(tmp_path / "run" / "samples" / "epoch_001.png", run)
    workers = children(run.pid)
    rank1 = [pid for pid in workers if b"RANK=1\0" in Path(f"/proc/{pid}/environ").read_bytes()]
    assert len(rank1) == 1, workers
    os.kill(rank1[0], signal.SIGKILL)
    started = time.monotonic()
    said = run.communicate(timeout=120)[0]  # no hang: torchrun returns, its other rank gone too
    assert run.returncode != 0 and time.monotonic() - started < 120, said[-3000:]
    assert children(run.pid) == []


def test_torchrun_resumes_a_single_process_run_and_a_nan_on_one_rank_stops_both(tmp_path):
    class_folder(tmp_path / "data")
    dcgan.main(["--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--image-size", "16",
                "--batch-size", "16", "--device", "cpu", "--no-amp", "--out-dir", str(tmp_path / "run"),
                *SMALL["dcgan"], "--epochs", "1"])
    torchrun("dcgan", tmp_path, "--epochs", "2", "--resume")
    out = tmp_path / "run"
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 6 and metric_rows(out, "step") == [*range(1, 7)]
    kept = (out / "ckpt.pt").read_bytes()
    said = torchrun("dcgan", tmp_path, "--epochs", "3", "--resume", "--log-every", "2", env={"NAN_ON_RANK": "1"},
                    wait_ok=False)
    assert said.count("stopped: a loss is NaN or infinite near step 8") == 2  # both ranks, at the same step
    assert (out / "ckpt.pt").read_bytes() == kept and metric_rows(out, "step") == [*range(1, 7)]
