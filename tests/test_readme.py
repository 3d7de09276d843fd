"""The README against the code: CI runs its test command, and every flag it names exists."""
import re
import sys

import pytest

import dcgan
import explore
import fid
import mlp_gan
import wgan_sn
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import cifar10_subset  # noqa: E402
import class_accuracy  # noqa: E402
import gpu_check  # noqa: E402

OTHER_TOOLS = {"--standalone", "--nproc_per_node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint",  # torchrun
               "--benchmark-only", "--benchmark-disable", "--no-deps"}  # pytest-benchmark, pip


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Tests", 1)[1].split("```bash", 1)[1].split("```", 1)[0].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert section and section in ci.splitlines()


def test_every_flag_the_readme_names_is_a_flag_of_a_script_or_a_tool(capsys):
    helps = []
    for main in (dcgan.main, wgan_sn.main, mlp_gan.main, fid.main, explore.main, class_accuracy.main,
                 cifar10_subset.main, gpu_check.main):
        with pytest.raises(SystemExit):
            main(["--help"])
        helps.append(capsys.readouterr().out)
    known = set(re.findall(r"--[a-z][a-z0-9-]*", " ".join(helps))) | OTHER_TOOLS
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", (ROOT / "README.md").read_text()))
    assert named - known == set()


def test_every_picture_the_readme_shows_is_in_the_repository_and_small():
    paths = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    assert paths and all((ROOT / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in paths)
    assert sum((ROOT / path).stat().st_size for path in set(paths)) < 600_000
