"""The scripts repeat a skeleton on purpose, so each stands alone; the copies must not drift.

A block starts with '# --- shared: NAME ...' and ends with '# --- end shared: NAME ---'. Every
script must hold every block, and each block's text must be identical across the scripts.
"""
import re

import pytest

from conftest import ROOT

SCRIPTS = [p for p in (ROOT / "mlp_gan.py", ROOT / "dcgan.py", ROOT / "wgan_sn.py") if p.exists()]
BLOCKS = ["flags", "device", "data", "build", "loop"]
OPTIONAL = ["image samples"]  # in the scripts that train on images only (not mlp_gan.py)
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


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_holds_every_shared_block(script):
    names = set(shared_blocks(script.read_text()))
    assert set(BLOCKS) <= names <= set(BLOCKS + OPTIONAL)


@pytest.mark.parametrize("name", BLOCKS + OPTIONAL)
def test_shared_blocks_are_identical(name):
    texts = {p.name: b[name] for p in SCRIPTS if name in (b := shared_blocks(p.read_text()))}
    assert len(texts) >= 2
    first_name, first = next(iter(texts.items()))
    for other, text in texts.items():
        assert text == first, f"shared block {name!r} differs between {first_name} and {other}"
