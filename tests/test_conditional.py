"""--conditional in the three scripts: the networks take labels, grids show a row a class, --generate --label,
exact resumes, one-line errors; bench/class_accuracy.py on a fixture."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan
import mlp_gan
import wgan_sn
from conftest import ROOT, make_mnist, make_nets, step

TINY = {dcgan: ["--g-width", "8", "--d-width", "8"], wgan_sn: ["--g-width", "32", "--d-width", "8"],
        mlp_gan: ["--g-width", "16", "--d-width", "16"]}
RUN = ["--batch-size", "8", "--log-every", "2", "--device", "cpu", "--image-size", "16"]


def run_cli(script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def class_folder(root, classes=("cat", "dog", "owl"), per_class=8):
    """A sub-folder a class; each class a colour, so that a class is easy to tell."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = np.full((20, 20, 3), 60 + 80 * k, np.uint8) + rng.integers(0, 20, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def conditional_args(module, classes=3):
    args = module.parse_args([*TINY[module], "--batch-size", "4", "--conditional", "--image-size", "16",
                              *(["--dataset", "mnist"] if module is mlp_gan else [])])
    return args


def label_weights(module, nets):
    """The weights that hold the classes: of the one-hot inputs (dcgan) or the embeddings (wgan_sn, mlp_gan)."""
    G, D = nets["G"], nets["D"]
    if module is dcgan:  # a transposed conv's weight is (in, out, ...): z_dim 100, then 3 labels; 1 image channel
        return [G[1].weight[100:], D[0].weight[:, 1:]]
    if module is mlp_gan:
        return [G[0].embed.weight, D.embed.weight]
    return [m.weight for m in G.modules() if isinstance(m, torch.nn.Embedding)] + \
        [D[-2].embed.parametrizations.weight.original]  # the head's class embedding


@pytest.mark.parametrize("module", [dcgan, wgan_sn, mlp_gan], ids=lambda m: m.SCRIPT)
def test_a_conditional_step_trains_the_label_embeddings(module):
    torch.manual_seed(0)
    args = conditional_args(module)
    nets = make_nets(module, args, 1, classes=3)
    before = [w.detach().clone() for w in label_weights(module, nets)]
    assert before and all(w.numel() for w in before)
    real = torch.rand(module.images_per_step(args), 1, 16, 16) * 2 - 1
    real = real.flatten(1) if module is mlp_gan else real
    out = step(module, nets, real, args, torch.autocast("cpu", enabled=False), labels=torch.tensor([0, 1, 2, 1]))
    assert all(torch.isfinite(v) for v in out)
    assert all(not torch.equal(a, b) for a, b in zip(before, label_weights(module, nets)))


@pytest.mark.parametrize("module", [dcgan, wgan_sn, mlp_gan], ids=lambda m: m.SCRIPT)
def test_a_conditional_generator_makes_what_the_label_says(module):
    torch.manual_seed(0)
    args = conditional_args(module)
    G, z = module.build(args, 1, 3)[0].eval(), torch.randn(6, args.z_dim)
    for m in G.modules():  # wgan_sn's class scales and shifts start equal (1 and 0): as if trained apart
        if isinstance(m, torch.nn.Embedding):
            torch.nn.init.normal_(m.weight)
    a, b = G(z, torch.zeros(6, dtype=torch.long)), G(z, torch.full((6,), 2))
    assert not torch.allclose(a, b)  # the label changes the image
    assert torch.equal(G(z), G(z, torch.tensor([0, 1, 2, 0, 1, 2])))  # no labels: the classes in turn
    unconditional = module.build(args, 1)[0].eval()
    assert torch.equal(unconditional(z), unconditional(z, torch.ones(6, dtype=torch.long)))  # labels unused


@pytest.mark.parametrize("script", ["dcgan.py", "wgan_sn.py"])
def test_grids_have_a_row_a_class_with_the_same_noise_in_each_column(tmp_path, script, monkeypatch):
    module = dcgan if script == "dcgan.py" else wgan_sn
    data = class_folder(tmp_path / "pets")
    seen, real_end = [], module.end_of_epoch

    def end_of_epoch(args, G, fixed, *rest):  # the grid's noise and labels, as train() gives them
        seen.append(fixed)
        return real_end(args, G, fixed, *rest)
    monkeypatch.setattr(module, "end_of_epoch", end_of_epoch)
    module.main(["--dataset", "folder", "--data-dir", str(data), "--epochs", "1", "--out-dir", str(tmp_path / "run"),
                 "--conditional", *TINY[module], *RUN])
    z, y = seen[0]
    assert y.tolist() == [k for k in range(3) for _ in range(8)]  # a row of 8 a class
    assert torch.equal(z[:8], z[8:16]) and torch.equal(z[:8], z[16:])  # the same noise down each column
    grid = Image.open(tmp_path / "run" / "samples" / "epoch_001.png")
    assert grid.size == (8 * 18 + 2, 3 * 18 + 2)  # 16-px images with 2-px gaps: 8 columns, 3 rows
    ck = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ck["args"]["conditional"] and ck["args"]["classes"] == ["cat", "dog", "owl"]
    assert Image.open(tmp_path / "run" / "progress.png").size[0] == grid.size[0]


def run_main(module, *argv):  # the exit status of module.main(argv), run in this process (no start-up cost)
    try:
        module.main([str(a) for a in argv])
        return 0
    except SystemExit as e:
        return e.code


def test_generate_writes_the_requested_labels(tmp_path, capsys):
    data = class_folder(tmp_path / "pets")
    out = tmp_path / "run"
    dcgan.main(["--dataset", "folder", "--data-dir", str(data), "--epochs", "1", "--out-dir", str(out),
                "--conditional", *TINY[dcgan], *RUN])
    for label, expected in [("2", [2] * 9), ("all", [0, 1, 2] * 3), (None, [0, 1, 2] * 3)]:
        npz = tmp_path / f"s{label}.npz"
        dcgan.main(["--generate", "9", "--ckpt", str(out / "ckpt.pt"), "--to", str(npz), "--device", "cpu",
                    *(["--label", label] if label else [])])
        samples = np.load(npz)
        assert samples["x"].shape == (9, 16, 16, 3) and samples["y"].tolist() == expected
    dcgan.main(["--generate", "4", "--ckpt", str(out / "ckpt.pt"), "--to", str(tmp_path / "pngs"), "--label", "1"])
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == [f"00000{i}_class1.png" for i in range(4)]
    capsys.readouterr()
    for bad in ("3", "-1", "cat"):  # out of range, or not a class index
        code = run_main(dcgan, "--generate", 4, "--ckpt", out / "ckpt.pt", "--to", tmp_path / "x.npz", "--label", bad)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "use 0 to 2 or all" in err


def test_conditional_errors_are_one_line(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(16):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(flat / f"{i}.png")
    code = run_main(dcgan, "--dataset", "folder", "--data-dir", flat, "--conditional", "--out-dir", tmp_path / "a",
                       *TINY[dcgan], *RUN)
    assert code == 2 and "has one class" in capsys.readouterr().err.strip().splitlines()[-1]  # after the bar
    r = run_cli("mlp_gan.py", "--dataset", "ring8", "--conditional", "--out-dir", tmp_path / "r")  # a real process
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "ring8 has one class" in r.stderr
    pets = class_folder(tmp_path / "pets")
    dcgan.main(["--dataset", "folder", "--data-dir", str(pets), "--epochs", "1", "--out-dir", str(tmp_path / "b"),
                *TINY[dcgan], *RUN])
    capsys.readouterr()
    code = run_main(dcgan, "--generate", 4, "--ckpt", tmp_path / "b" / "ckpt.pt", "--to", tmp_path / "x.npz",
                       "--label", "0")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not conditional" in err
    code = run_main(dcgan, "--generate", 4, "--ckpt", tmp_path / "b" / "ckpt.pt", "--to", tmp_path / "x.npz",
                    "--label", "all")  # refused as --label 0 is: the checkpoint has no classes to share out
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not conditional" in err
    assert not (tmp_path / "x.npz").exists()
    code = run_main(dcgan, "--dataset", "folder", "--data-dir", pets, "--epochs", 2, "--out-dir", tmp_path / "b",
                       "--resume", "--conditional", *TINY[dcgan], *RUN)  # a conditional resume of an unconditional run
    assert code == 2 and "--conditional False" in capsys.readouterr().err


def weights(path):
    ck = torch.load(path, weights_only=True)
    return {f"{k}.{n}": t for k in ("G", "D", "G_ema") for n, t in ck[k].items()}


@pytest.mark.parametrize("script", ["wgan_sn.py", "mlp_gan.py"])
def test_a_conditional_resume_is_exact(tmp_path, script):
    module = wgan_sn if script == "wgan_sn.py" else mlp_gan
    if module is mlp_gan:
        data = ["--dataset", "mnist", "--data-dir", str(make_mnist(tmp_path / "data"))]
    else:
        data = ["--dataset", "folder", "--data-dir", str(class_folder(tmp_path / "pets"))]
    common = [*data, "--conditional", *TINY[module], *RUN, *(["--no-lr-decay"] if module is wgan_sn else [])]
    module.main(common + ["--epochs", "3", "--out-dir", str(tmp_path / "straight")])
    module.main(common + ["--epochs", "1", "--out-dir", str(tmp_path / "split")])
    module.main(common + ["--epochs", "3", "--out-dir", str(tmp_path / "split"), "--resume"])
    straight, split = weights(tmp_path / "straight" / "ckpt.pt"), weights(tmp_path / "split" / "ckpt.pt")
    assert straight.keys() == split.keys() and any("embed" in k or "scale" in k or "0.weight" in k for k in split)
    assert all(torch.equal(straight[k], split[k]) for k in straight)


def test_class_accuracy_trains_a_classifier_and_scores_labelled_samples(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import class_accuracy
    data = make_mnist(tmp_path / "data", n_train=256, n_test=32)
    monkeypatch.setitem(class_accuracy.EPOCHS, "mnist", 1)
    x, y, _ = dcgan.load_images("mnist", data, 28, train=False)
    np.savez(tmp_path / "real.npz", x=x.permute(0, 2, 3, 1).numpy(), y=y.numpy())  # 28x28, as mlp_gan.py's
    path = tmp_path / "clf.pt"
    class_accuracy.main([str(tmp_path / "real.npz"), "--dataset", "mnist", "--data-dir", str(data),
                         "--classifier", str(path)])
    out = capsys.readouterr().out
    assert path.is_file() and "on the real mnist test set" in out
    assert out.count("samples, ") == len(y.unique()) and "mean over" in out
    with pytest.raises(SystemExit) as e:  # an .npz without labels: one line, status 2
        np.savez(tmp_path / "unlabelled.npz", x=x.permute(0, 2, 3, 1).numpy())
        class_accuracy.main([str(tmp_path / "unlabelled.npz"), "--dataset", "mnist", "--classifier", str(path)])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_a_resume_refuses_other_class_names_and_a_mid_epoch_place_of_another_batch(tmp_path, capsys):
    pets = class_folder(tmp_path / "pets")
    run = ["--dataset", "folder", "--data-dir", str(pets), "--out-dir", str(tmp_path / "run"), "--conditional",
           *TINY[dcgan], *RUN]
    dcgan.main(run + ["--epochs", "1"])
    (pets / "dog").rename(pets / "bat")  # the same count, another order: every label would mean another class
    capsys.readouterr()
    assert run_main(dcgan, *run, "--epochs", 2, "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "classes are not the checkpoint's" in err and "0: cat -> bat, 1: dog -> cat" in err
    (pets / "bat").rename(pets / "dog")
    ck = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    ck["pos"] = 1  # as a checkpoint written after the first step of epoch 2
    torch.save(ck, tmp_path / "run" / "ckpt.pt")
    assert run_main(dcgan, *run, "--epochs", 2, "--resume", "--batch-size", 4) == 2
    assert "needs the same 8 images a step" in capsys.readouterr().err
    assert run_main(dcgan, *run, "--epochs", 2, "--resume") == 0  # the same batch: it continues
