"""The scripts repeat their plumbing on purpose, so that each stands alone; the copies must not drift.

A block starts with '# --- shared: NAME (...) ---' and ends with '# --- end shared: NAME ---'. Each file
holds exactly the blocks it uses, and a block's text is identical in every file that holds it.
"""
import re

import pytest

from conftest import ROOT

EVERY_SCRIPT = {"flags", "skeleton", "mnist"}
EXPECTED = {
    "mlp_gan.py": EVERY_SCRIPT,  # no CIFAR-10 or image-folder code: it trains on points and MNIST only
    "dcgan.py": EVERY_SCRIPT | {"cifar10", "images"},
    "wgan_sn.py": EVERY_SCRIPT | {"cifar10", "images"},
    "fid.py": {"mnist", "cifar10"},  # its own readers for mnist:train, cifar10:test and the like
}
START = re.compile(r"^# --- shared: ([\w ]+?) (?:\(|---)[^\n]*\n", re.M)


def shared_blocks(text):
    blocks = {}
    for m in START.finditer(text):
        name = m.group(1)
        end = text.find(f"# --- end shared: {name} ---", m.end())
        assert end != -1, f"shared block {name!r} has no end marker"
        assert name not in blocks, f"shared block {name!r} appears twice"
        blocks[name] = text[m.end():end]
    return blocks


def test_parser_finds_blocks_and_notices_a_change():
    text = "x = 1\n# --- shared: a (note) ---\ndef f():\n    pass\n# --- end shared: a ---\n"
    assert shared_blocks(text) == {"a": "def f():\n    pass\n"}
    assert shared_blocks(text.replace("pass", "return 1")) != shared_blocks(text)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_file_holds_the_blocks_it_uses(name):
    assert set(shared_blocks((ROOT / name).read_text())) == EXPECTED[name]


@pytest.mark.parametrize("block", sorted(set().union(*EXPECTED.values())))
def test_shared_blocks_are_identical(block):
    texts = {n: b[block] for n in EXPECTED if block in (b := shared_blocks((ROOT / n).read_text()))}
    assert len(texts) >= 2
    first_name, first = next(iter(texts.items()))
    for other, text in texts.items():
        assert text == first, f"shared block {block!r} differs between {first_name} and {other}"
