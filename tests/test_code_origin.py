"""What a sidecar records about the code that made it, where gpt2train is not a git checkout of its own:
the package copied to a folder without .git (what a wheel installs), and the same package inside some
other repository (a virtual environment in a user's project). No git message may reach the output, and
no commit of another repository may be recorded as ours.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.paths import REPO

pytestmark = pytest.mark.e2e  # a Python process of its own per layout

PRINT_PROVENANCE = ("import json; from gpt2train.lineage.records import provenance; "
                    "print(json.dumps(provenance('corpus', 'c0de')))")


def provenance_from(site) -> tuple[dict, str]:
    """(provenance() as the package copied into `site` records it, what its process wrote to stderr)."""
    shutil.copytree(REPO / "gpt2train", site / "gpt2train", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(site), "GIT_CEILING_DIRECTORIES": str(site.parent.parent)}
    r = subprocess.run([sys.executable, "-c", PRINT_PROVENANCE], capture_output=True, text=True, cwd=site,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def test_outside_a_checkout_the_package_version_is_recorded_and_git_says_nothing(tmp_path):
    from gpt2train import __version__

    site = tmp_path / "plain" / "site-packages"
    site.mkdir(parents=True)
    prov, stderr = provenance_from(site)
    assert prov["git_commit"] is None and stderr == ""
    assert prov["code_origin"] == (f"installed package gpt2train {__version__} (not a git checkout, so no commit "
                                   f"is recorded)")
    assert prov["gpt2train_version"] == __version__


def test_a_package_inside_another_repository_does_not_record_its_commit(tmp_path):
    project = tmp_path / "project"
    site = project / ".venv" / "site-packages"
    site.mkdir(parents=True)
    git = ["git", "-C", str(project), "-c", "user.name=u", "-c", "user.email=u@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "the user's project"], check=True)
    prov, stderr = provenance_from(site)
    assert prov["git_commit"] is None and "not a git checkout" in prov["code_origin"] and stderr == ""


def test_in_this_checkout_the_commit_is_recorded():
    from gpt2train.lineage.records import code_origin, git_commit

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert git_commit().removesuffix("-dirty") == head.stdout.strip()
    assert code_origin() == f"git checkout at commit {git_commit()}"
