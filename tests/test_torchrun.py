"""dcgan.py and wgan_sn.py under torchrun: two CPU ranks (gloo) on a tiny image folder.

Each run is a real `python -m torch.distributed.run --standalone --nproc_per_node=2` with one thread a rank.
A small wrapper around the script records its networks (each rank writes them as built and its G at the end)
and which rank writes a folder's image cache."""
import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dcgan
import wgan_sn
from conftest import ROOT, class_folder

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not sys.platform.startswith("linux"),
                                reason="needs torch.distributed with gloo, POSIX signals and /proc")

SMALL = {"dcgan": ["--g-width", "8", "--d-width", "8"], "wgan_sn": ["--g-width", "32", "--d-width", "8"]}
WRAPPER = """
import os, sys, torch
sys.path.insert(0, {root!r})
import {script} as script
rank = os.environ["RANK"]
built = []
real_build = script.build
def build(*args):  # the networks of this rank, written as built and (G) at the end
    built.append(real_build(*args))
    torch.save([net.state_dict() for net in built[-1]], os.path.join({out!r}, "built_rank" + rank + ".pt"))
    return built[-1]
script.build = build
real_save = script.atomic_save
def atomic_save(obj, path):  # who writes the image cache
    if ".gan-cache" in str(path):
        with open(os.path.join({out!r}, "cache_writes.txt"), "a") as f:
            f.write(rank + "\\n")
    real_save(obj, path)
script.atomic_save = atomic_save
if os.environ.get("NAN_ON_RANK") == os.environ["RANK"]:  # this rank's losses turn NaN
    real_step = script.train_step
    script.train_step = lambda *a, **k: [v * float("nan") for v in real_step(*a, **k)]
try:
    script.main(sys.argv[1:])
finally:
    if built:
        torch.save(built[0][0].state_dict(), os.path.join({out!r}, "G_rank" + os.environ["RANK"] + ".pt"))
"""


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


def workers_of(run):  # {rank: PID} of a torchrun's worker processes
    found = {}
    for pid in children(run.pid):
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = [v[5:].decode() for v in env if v.startswith(b"RANK=")]
        if rank:
            found[int(rank[0])] = pid
    return found


def running(pid):  # alive and not a zombie
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def started():  # torchrun runs a test starts: killed with their workers whatever the test's end
    runs = []
    yield runs
    for run in runs:
        for pid in [*workers_of(run).values(), run.pid] if run.poll() is None else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run.wait(timeout=60)


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
    assert (tmp_path / "cache_writes.txt").read_text() == "0\n"  # rank 0 decoded; rank 1 read its cache
    built = [torch.load(tmp_path / f"built_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for net0, net1 in zip(*built):  # the same weights and buffers (spectral norm's u and v too) on both ranks
        assert net0.keys() == net1.keys() and all(torch.equal(net0[k], net1[k]) for k in net0)
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


def test_sigterm_to_torchrun_stops_both_ranks_at_one_step_with_a_checkpoint_that_resumes(tmp_path, started):
    class_folder(tmp_path / "data")
    run = torchrun("dcgan", tmp_path, "--epochs", "1000", wait=False)
    started.append(run)
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


def test_repeated_sigterms_to_both_ranks_and_torchrun_keep_the_checkpoint(tmp_path, started):
    """A scheduler signals every process of the job and torchrun signals its workers again: no second SIGTERM
    interrupts the save, and rank 1 does not exit (so torchrun does not stop rank 0) before it is written."""
    class_folder(tmp_path / "data")
    run = torchrun("dcgan", tmp_path, "--epochs", "1000", wait=False)
    started.append(run)
    out = tmp_path / "run"
    wait_for(out / "samples" / "epoch_002.png", run)
    workers = workers_of(run)
    assert sorted(workers) == [0, 1], workers
    for pid in [*workers.values(), run.pid]:
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.2)
    for pid in workers.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    said = run.communicate(timeout=90)[0]
    assert "--resume continues" in said and "KeyboardInterrupt" not in said, said[-3000:]
    assert 'dcgan.py", line' not in said, said[-3000:]  # no traceback of a worker (torchrun prints its own)
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert ck["step"] == 3 * ck["epoch"] + ck["pos"] and metric_rows(out, "step") == list(range(1, ck["step"] + 1))
    assert not list(out.glob("*.tmp")) and not (out / "run.lock").exists()
    dcgan.main(["--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--image-size", "16",
                "--batch-size", "16", "--device", "cpu", "--no-amp", "--out-dir", str(out), *SMALL["dcgan"],
                "--epochs", str(ck["epoch"] + 2), "--resume"])
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 3 * (ck["epoch"] + 2)


def test_a_killed_rank_stops_the_other_without_a_hang(tmp_path, started):
    class_folder(tmp_path / "data")
    run = torchrun("dcgan", tmp_path, "--epochs", "1000", wait=False)
    started.append(run)
    wait_for(tmp_path / "run" / "samples" / "epoch_001.png", run)
    workers = workers_of(run)
    assert sorted(workers) == [0, 1], workers
    os.kill(workers[1], signal.SIGKILL)
    began = time.monotonic()
    said = run.communicate(timeout=120)[0]  # no hang: torchrun returns, its other rank gone too
    assert run.returncode != 0 and time.monotonic() - began < 120, said[-3000:]
    deadline = time.monotonic() + 10  # each worker gone, not handed on to PID 1 alive
    while any(map(running, workers.values())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(running, workers.values()))


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
