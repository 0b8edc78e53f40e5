"""gpt2train as a user installs it without a checkout: a wheel in a fresh venv, run from another folder.

The wheel is built from the files a clone has (git's view of the package folders, pyproject.toml,
README.md), copied into a temporary folder so the build's `build/` and `.egg-info` never land in the
checkout. The venv is new and outside the repository; its dependencies come from this environment's
site-packages through a `.pth` line (a plain path: the editable install's finder there is not run, so
only the wheel's gpt2train can be imported), which keeps the test at seconds instead of a full install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.paths import EDU_MINI, REPO

pytestmark = pytest.mark.e2e

PACKAGED = ("pyproject.toml", "README.md", "gpt2train", "assets", "pipelines", "evals")


def build_wheel(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", *PACKAGED],
                           cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    source = dest / "source"
    for name in filter(None, files):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest / "dist"), str(source)],
                   check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (dest / "dist").glob("gpt2train-*.whl")
    return wheel


def test_wheel_ships_its_presets_and_writes_where_the_user_stands(tmp_path):
    wheel = build_wheel(tmp_path / "build")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args):
        done = subprocess.run([venv / "bin" / "gpt2train", *args], cwd=work, env=env, capture_output=True, text=True,
                              check=False, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "fatal: not a git repository" not in done.stderr
        return done

    where = subprocess.run([venv / "bin" / "python", "-c", "import gpt2train; print(gpt2train.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the wheel's, not this checkout's

    cfg = json.loads(run("config", "--config", "gpt2_124m").stdout)
    assert cfg["data_dir"] == str(work.resolve() / "data" / "gpt2_124m")
    assert cfg["model"]["descriptor"] == "d12"

    # The tiny chain's first stage: edu-mini's first file, a few documents, into shards under the cwd.
    run("-q", "prepare", "--config", "tiny", "--set", f"corpus.source={EDU_MINI}", "--files", "1",
        "--documents", "40", "--shard-size", "20000", "--out", "prepared")
    shards = sorted(p.name for p in (work / "prepared").glob("*.bin"))
    assert "edu_fineweb_val_000000.bin" in shards and "edu_fineweb_train_000001.bin" in shards, shards
    written = {p for p in (site / "gpt2train").rglob("*") if "__pycache__" not in p.parts}
    assert all(p.suffix in (".py", ".yaml") or p.is_dir() for p in written), "written inside the installed package"
