"""DiffAugment (--diffaug) in dcgan.py and wgan_sn.py (a shared block: dcgan.py's copy is tested here, the
training step and the runs of both): the ops, their randomness, the default, runs, resumes, labels."""
import contextlib
import sys

import pytest
import torch

import dcgan
import wgan_sn
from conftest import ROOT, class_folder, make_cifar, make_nets, step

sys.path.insert(0, str(ROOT / "bench"))
import cifar10_subset  # noqa: E402

ALL = "color,translation,cutout"


def images(n=8, side=32, seed=0):
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", ALL])
def test_a_gradient_reaches_gs_weights_through_the_ops(policy):
    torch.manual_seed(0)
    G = dcgan.Generator(z_dim=8, image_size=16, channels=3, width=8)
    loss = (dcgan.diff_augment(G(torch.randn(4, 8)), policy) ** 2).sum()
    loss.backward()
    grads = [p.grad for p in G.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("policy", ["color", "translation", "cutout"])
def test_each_image_gets_its_own_draw(policy):
    torch.manual_seed(0)
    x = images(1).expand(16, -1, -1, -1)  # the same image 16 times
    out = dcgan.diff_augment(x, policy)
    assert out.shape == x.shape and len({tuple(o.flatten().tolist()) for o in out}) > 8


def test_translation_moves_each_image_by_at_most_an_eighth_and_zeros_come_in():
    torch.manual_seed(0)
    x = images(64) * 0.5 + 0.6  # no zeros in the images: a zero is a pixel that came in
    out = dcgan.translate(x, 0.125)
    moves = set()
    for a, b in zip(x, out):
        found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                 if torch.equal(b, shifted(a, dy, dx))]
        assert len(found) == 1
        moves.add(found[0])
    assert len(moves) > 20  # many different moves, none beyond 4 pixels (an eighth of 32) either way


def shifted(a, dy, dx):  # output pixel (i, j) is input (i + dy, j + dx), zero outside
    out = torch.zeros_like(a)
    h, w = a.shape[1:]
    out[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
        a[:, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    return out


def test_cutout_zeros_one_square_of_half_the_side_at_most_and_keeps_the_rest():
    torch.manual_seed(0)
    x = images(64) * 0.5 + 0.6
    out = dcgan.cut_out(x, 0.5)
    for a, b in zip(x, out):
        cut = (b == 0).all(0)  # the pixels set to zero in every channel
        rows, cols = cut.any(1).nonzero().flatten(), cut.any(0).nonzero().flatten()
        assert 0 < len(rows) <= 16 and 0 < len(cols) <= 16
        assert cut.sum() == len(rows) * len(cols)  # a rectangle: a square, clipped at the border
        assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)
        assert torch.equal(b[:, ~cut], a[:, ~cut])


def test_color_changes_brightness_saturation_and_contrast_within_the_references_ranges():
    torch.manual_seed(0)
    gray = torch.full((256, 3, 4, 4), 0.2)  # gray: saturation does nothing, contrast about its own mean
    out = dcgan.diff_augment(gray, "color")
    shift = out[:, 0, 0, 0] - 0.2
    assert (out == out[:, :1, :1, :1]).all() and shift.abs().max() <= 0.5 and shift.std() > 0.2


@pytest.mark.parametrize("policy", ["off", None])  # None: a step run before load_data() settles the flag
def test_off_leaves_the_images_and_the_random_stream_alone(policy):
    x = images()
    torch.manual_seed(0)
    out, after = dcgan.diff_augment(x, policy), torch.rand(3)
    torch.manual_seed(0)
    assert out is x and torch.equal(after, torch.rand(3))  # no random number drawn


def test_the_default_is_off_and_a_given_policy_wins(tmp_path):
    args = dcgan.parse_args(["--out-dir", str(tmp_path)])
    assert args.diffaug is None and dcgan.settle_diffaug(args)[0] == "off"
    given = dcgan.parse_args(["--diffaug", "translation", "--out-dir", str(tmp_path)])
    assert dcgan.settle_diffaug(given) == ("translation", "--diffaug")
    for bad in ("colour", "color,", "auto", "off,color", ""):
        with pytest.raises(SystemExit):
            dcgan.parse_args(["--diffaug", bad])


@pytest.mark.parametrize("module", [dcgan, wgan_sn])
@pytest.mark.parametrize("policy", ["off", "translation", ALL])
def test_a_tiny_run_with_each_policy_finishes_and_resumes_with_it(module, policy, tmp_path, capsys):
    class_folder(tmp_path / "images")  # 48 images
    flags = ["--dataset", "folder", "--data-dir", str(tmp_path / "images"), "--image-size", "16",
             "--batch-size", "16", "--g-width", "32", "--d-width", "8", "--device", "cpu",
             "--out-dir", str(tmp_path / "run")]
    module.main([*flags, "--epochs", "1", "--diffaug", policy])
    assert capsys.readouterr().out.startswith(f"48 images: DiffAugment {policy} (--diffaug)\n")
    module.main([*flags, "--epochs", "2", "--resume"])  # no --diffaug: the run's, from its checkpoint
    assert f"48 images: DiffAugment {policy} (the run's" in capsys.readouterr().out
    checkpoint = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["args"]["diffaug"] == policy


def test_a_new_run_says_it_runs_without_diffaugment_and_why(tmp_path, capsys):
    class_folder(tmp_path / "images")
    dcgan.main(["--dataset", "folder", "--data-dir", str(tmp_path / "images"), "--image-size", "16",
                "--batch-size", "16", "--g-width", "8", "--d-width", "8", "--epochs", "1", "--device", "cpu",
                "--out-dir", str(tmp_path / "run")])
    assert capsys.readouterr().out.splitlines()[0] == \
        "48 images: DiffAugment off (the default; --diffaug color,translation,cutout turns it on)"
    checkpoint = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert checkpoint["args"]["diffaug"] == "off"


class Recorder(torch.nn.Module):  # D as the step sees it, recording each pass's images and labels
    def __init__(self, D):
        super().__init__()
        self.D, self.seen = D, []

    def forward(self, x, y):
        self.seen.append((x.detach().clone(), y.clone()))
        return self.D(x, y)


@pytest.mark.parametrize("module", [dcgan, wgan_sn])
def test_a_conditional_step_keeps_each_images_label_and_augments_every_pass(module):
    args = module.parse_args(["--image-size", "16", "--batch-size", "8", "--g-width", "32", "--d-width", "8",
                              "--conditional", "--diffaug", "translation", "--g-batch-mult", "1"]
                             if module is wgan_sn else
                             ["--image-size", "16", "--batch-size", "8", "--g-width", "8", "--d-width", "8",
                              "--conditional", "--diffaug", "translation"])
    torch.manual_seed(0)
    nets = make_nets(module, args, 3, classes=4)
    nets["D"] = Recorder(nets["D"])
    reals, labels = images(8, 16) * 0.5 + 0.6, torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    step(module, nets, reals, args, contextlib.nullcontext(), labels=labels)
    passes = nets["D"].seen
    first_x, first_y = passes[0]  # reals first (in wgan_sn.py: reals and fakes in one pass)
    assert torch.equal(first_y[:8], labels) and all(torch.equal(y[:8], labels) for _, y in passes)
    for real, seen in zip(reals, first_x[:8]):  # each real, moved: its own image beside its own label
        assert any(torch.equal(seen, shifted(real, dy, dx)) for dy in range(-2, 3) for dx in range(-2, 3))
    assert not torch.equal(first_x[:8], reals)
    assert len(passes) == (3 if module is dcgan else 2)  # D step (reals, fakes), G step; every pass moved:
    assert all(came_in(x).float().mean() > 0.5 for x, _ in passes)  # most images have an edge of zeros


def came_in(x):  # per image: a whole edge row or column of zeros, which a translation brings in
    edges = [x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]]  # each (n, channels, side)
    return torch.stack([(edge == 0).all(2).all(1) for edge in edges]).any(0)


def test_the_cifar10_subset_is_the_first_images_of_each_class_in_a_folder_a_class(tmp_path):
    make_cifar(tmp_path / "data")  # 80 training images, random labels
    x, labels, classes = dcgan.load_cifar10(tmp_path / "data")
    written = cifar10_subset.write_subset(2, tmp_path / "subset", tmp_path / "data")
    loaded, folder_labels, folder_classes = dcgan.load_images("folder", tmp_path / "subset", 32)
    expected = [i for c in range(10) for i in (labels == c).nonzero().flatten()[:2].tolist()]
    assert written == len(expected) == len(loaded) and folder_classes == sorted(classes)
    assert torch.equal(loaded, x[expected]) and [folder_classes[k] for k in folder_labels] == \
        [classes[labels[i]] for i in expected]
