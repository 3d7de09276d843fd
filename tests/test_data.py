"""The shared data code, through dcgan.py's copy (tests/test_shared_blocks.py keeps the copies identical)."""
import pickle

import pytest
import torch

import dcgan
from conftest import make_cifar, make_folder, make_mnist


@pytest.mark.parametrize("dataset,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_files_load_padded_to_32(tmp_path, dataset, folder):
    make_mnist(tmp_path, folder=folder, n_train=20, n_test=7)
    x, labels, classes = dcgan.load_images(dataset, tmp_path, 32)
    assert x.shape == (20, 1, 32, 32) and x.dtype == torch.uint8
    raw = (tmp_path / folder / "raw" / "train-labels-idx1-ubyte").read_bytes()[8:]  # after the IDX header
    assert labels.tolist() == list(raw) and len(classes) == 10
    assert classes[0] == ("0 - zero" if dataset == "mnist" else "T-shirt/top")
    assert x[:, :, :2].sum() == 0 and x[:, :, :, -2:].sum() == 0  # the 2-pixel zero padding
    assert x.max() == 255
    assert dcgan.load_images(dataset, tmp_path, 28, train=False)[0].shape == (7, 1, 28, 28)
    assert dcgan.load_images(dataset, tmp_path, 64, channels=3)[0].shape == (20, 3, 64, 64)


def test_cifar_reads_all_five_training_batches_and_the_test_batch(cifar_dir):
    x, labels, classes = dcgan.load_images("cifar10", cifar_dir, 32)
    assert x.shape == (80, 3, 32, 32) and x.dtype == torch.uint8
    assert sorted(x[:, 0, 0, 0].unique().tolist()) == [0, 40, 80, 120, 160]  # batches 1..5, red plane
    batches = [pickle.loads((cifar_dir / "cifar-10-batches-py" / f"data_batch_{i}").read_bytes(), encoding="latin1")
               for i in range(1, 6)]
    assert labels.tolist() == [y for b in batches for y in b["labels"]]
    meta = pickle.loads((cifar_dir / "cifar-10-batches-py" / "batches.meta").read_bytes(), encoding="latin1")
    assert classes == meta["label_names"]
    test, test_labels, _ = dcgan.load_images("cifar10", cifar_dir, 32, train=False)
    assert test.shape == (16, 3, 32, 32) and (test[:, 0] == 200).all() and len(test_labels) == 16
    assert dcgan.load_images("cifar10", cifar_dir, 16, channels=1)[0].shape == (80, 1, 16, 16)


def test_cifar_row_layout_is_red_green_blue_planes(tmp_path):
    make_cifar(tmp_path, per_batch=2)
    x = dcgan.load_images("cifar10", tmp_path, 32)[0]
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with open(path, "rb") as f:
        row = pickle.load(f, encoding="latin1")["data"][1]
    assert torch.equal(x[3].flatten(), torch.from_numpy(row))  # batch 2, image 1


def test_cifar_batch_that_would_run_code_is_refused(cifar_dir):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with open(cifar_dir / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({"data": Evil()}, f, protocol=2)
    with pytest.raises(dcgan.UsageError, match="CIFAR-10 python batch"):
        dcgan.load_images("cifar10", cifar_dir, 32)


def test_missing_data_offline_is_one_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*a, **k):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")
    monkeypatch.setattr(tvu, "download_url", offline)
    with pytest.raises(dcgan.UsageError) as e:
        dcgan.load_images("cifar10", tmp_path / "nothing", 32)
    assert "cifar-10-batches-py" in str(e.value) and "\n" not in str(e.value)


def test_folder_decodes_nested_images_skips_broken_ones_and_caches(tmp_path, capsys):
    root = make_folder(tmp_path / "imgs", n=9)
    x, labels, classes = dcgan.load_images("folder", root, 16)
    assert x.shape == (12, 3, 16, 16) and x.dtype == torch.uint8  # 9 + gray + RGBA + jpg
    assert classes == [".", "sub"]  # first-level sub-folders (sub/deeper is in sub); "." the top level
    assert labels.tolist().count(1) == 6 and labels.tolist().count(0) == 6  # img1,2,4,5,7,8; img0,3,6 + 3
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image(s)" in err and "broken.png" in err
    cache = root / ".gan-cache-16px-3ch.pt"
    assert cache.is_file()
    # The cache is used as it is: poison it (same fingerprint) and the poisoned images come back.
    c = torch.load(cache, weights_only=True)
    c["images"] = torch.zeros_like(c["images"])
    torch.save(c, cache)
    assert dcgan.load_images("folder", root, 16)[0].sum() == 0
    assert dcgan.load_images("folder", root, 16)[1].tolist() == labels.tolist()
    # A new image changes the fingerprint, so the cache is rebuilt.
    (root / "img0.png").rename(root / "sub" / "moved.png")
    assert dcgan.load_images("folder", root, 16)[0].sum() > 0
    assert dcgan.load_images("folder", root, 32, channels=1)[0].shape == (12, 1, 32, 32)


def test_rgba_is_flattened_onto_white_and_crop_is_central(tmp_path):
    import numpy as np
    from PIL import Image
    img = np.zeros((20, 40, 4), np.uint8)  # fully transparent, 40 wide, 20 high
    img[:, 10:30, :3] = 90
    img[:, 10:30, 3] = 255  # the opaque centre square
    Image.fromarray(img, mode="RGBA").save(tmp_path / "a.png")
    x, labels, classes = dcgan.load_images("folder", tmp_path, 16)
    assert x.shape == (1, 3, 16, 16) and labels.tolist() == [0] and classes == ["."]  # flat: one class
    assert (x[0, :, 2:-2, 2:-2] == 90).all()  # the centred crop is the opaque square


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(dcgan.UsageError, match="no usable images"):
        dcgan.load_images("folder", tmp_path, 32)


def test_batch_scaling_and_augmentation():
    batch = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).repeat(8, 3, 2, 1)
    x = dcgan.to_float(batch, torch.device("cpu"))
    assert x.min() == -1 and x.max() == 1
    torch.manual_seed(0)
    flipped = dcgan.to_float(batch, torch.device("cpu"), hflip=True)
    first = flipped[:, 0, 0, 0]
    assert (first == 1).any() and (first == -1).any()  # some flipped, some not
    j = dcgan.to_float(batch, torch.device("cpu"), jitter=0.2)
    assert j.min() >= -1 and j.max() <= 1 and not torch.equal(j, x)


def test_each_rank_gets_its_own_slice_of_a_steps_images():
    data = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1) * 5  # image i holds the value 5 i
    labels = torch.arange(40)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    data, labels = dcgan.place_data(data, labels, torch.device("cpu"))
    for pos in range(2):  # 2 steps of 2 ranks x 8 images
        slices = [dcgan.rank_batch(data, labels, order, pos, 8, rank, 2) for rank in (0, 1)]
        for x, y in slices:
            assert torch.equal(x.flatten(), (y * 5).to(torch.uint8))  # the images of those labels
        taken = torch.cat([y for _, y in slices])
        assert torch.equal(taken, order[16 * pos:16 * (pos + 1)])  # disjoint, in the step's order
    x, y = dcgan.rank_batch(data, labels, order, 1, 8, 0, 1)  # one process: the step's images
    assert torch.equal(y, order[8:16])
