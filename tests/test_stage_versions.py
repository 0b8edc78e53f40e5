"""Code versions change exactly when an output can: each stage's output on fixed inputs equals the one
recorded at its version (tests/golden_outputs.py), and in a copy of the repository, edits that cannot
change an output leave every code version and golden as it was, while edits that can are caught by
their stage's golden (which then demands a version bump)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import golden_outputs
from tests.paths import REPO, SHARED


# The evals stage's output is the real harness's scores (e2e); the others are computed in this process.
@pytest.mark.parametrize("stage", [pytest.param(s, marks=pytest.mark.e2e) if s == "evals" else s
                                   for s in golden_outputs.STAGES])
def test_stage_output_matches_its_golden(stage):
    assert golden_outputs.check(stage) == []


def test_a_moved_output_without_a_bump_names_the_stage():
    golden = json.loads(golden_outputs.GOLDEN.read_text())
    golden["eval_summary"]["outputs"]["rows"][0]["step"] += 1
    (problem,) = golden_outputs.check("eval_summary", golden)
    assert problem.startswith("stage eval_summary's output changed while its version stayed 1: "
                              "eval_summary/rows[0]/step: 41 recorded, 40 now"), problem
    assert "bump 'eval_summary' in gpt2train/lineage/stage_versions.py" in problem
    golden["eval_summary"]["version"] = 0
    (problem,) = golden_outputs.check("eval_summary", golden)
    assert "recorded at version 0" in problem and "--update --stage eval_summary" in problem


def test_settings_that_shape_an_output_change_its_code_version():
    base = golden_outputs.code_versions()
    changed = golden_outputs.code_versions("evals.tasks=[hellaswag, piqa]", "train.learning_rate=0.002")
    assert {k for k in base if base[k] != changed[k]} == {"eval_report", "training_run"}
    # ...and what only selects, places or paces does not.
    same = golden_outputs.code_versions("corpus.files=1", "shards.threads=1", "train.checkpoint_every=5",
                                        "train.val_every=7", "train.sample_every=0", "evals.batch_size=3")
    assert same == base


def _copy_repo(tmp_path: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    root = tmp_path / "repo"
    for name in files:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    return root


def _edit(root: Path, file: str, old: str, new: str) -> None:
    path = root / file
    text = path.read_text()
    assert text.count(old) == 1, f"{file}: {old!r} occurs {text.count(old)} times"
    path.write_text(text.replace(old, new))


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "GPT2TRAIN_SHARED": str(SHARED)}
    return subprocess.run([sys.executable, "-m", "tests.golden_outputs", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)


# Edits that cannot change what any stage computes.
NO_OUTPUT_EDITS = [
    ("gpt2train/training/loop.py", "log = logging.getLogger(__name__)\n",
     "log = logging.getLogger(__name__)\n# a comment a reviewer asked for\n"),
    ("gpt2train/model.py", "GPT-2 as llm.c trains it, on one page", "GPT-2 as llm.c trains it, on a single page"),
    ("gpt2train/training/evals.py", "\"step %d/%d | val loss %.6f\"", "\"step %d/%d | validation loss %.6f\""),
    ("gpt2train/data/loader.py", "no token shards match", "no token shard files match"),
    ("gpt2train/train.py", "show this help (-h is llm.c's HellaSwag flag)", "print this help (-h is llm.c's HellaSwag)"),
    ("gpt2train/training/llmc.py", "\"-a\": \"train.overfit_batch\", \"-f\": \"train.tf32\", \"-ge\": None,",
     "\"-a\": \"train.overfit_batch\", \"-f\": \"train.tf32\", \"-ge\": None, \"-lg\": None,"),
    ("gpt2train/training/mfu.py", "\"NVIDIA L4\": GpuPeak(121.0,", "\"NVIDIA L4\": GpuPeak(120.0,"),
    ("gpt2train/training/plots.py", "label=\"val loss\")", "label=\"validation loss\", color=\"C3\")"),
]


@pytest.mark.e2e
def test_edits_that_cannot_change_an_output_make_nothing_stale(tmp_path):
    root = _copy_repo(tmp_path)
    before = json.loads(_run(root, "--versions").stdout)
    for file, old, new in NO_OUTPUT_EDITS:
        _edit(root, file, old, new)
    # A function moved to a module of its own, its body unchanged.
    parallelize, loop = root / "gpt2train" / "training" / "parallelize.py", root / "gpt2train" / "training" / "loop.py"
    source = parallelize.read_text()
    start, end = source.index("def set_matmul_precision("), source.index("def autocast_for(")
    parallelize.write_text(source[:start] + source[end:])
    loop.write_text(loop.read_text().replace(" optimizer_shard_state, set_matmul_precision,", " optimizer_shard_state,")
                    + "\n\n" + source[start:end].rstrip() + "\n")
    after = _run(root, "--versions")
    assert after.returncode == 0, after.stderr[-2000:]
    assert json.loads(after.stdout) == before
    checked = _run(root, "--check")
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-2000:]


# Edits that change one stage's output: (what, file, old, new, the stage whose golden catches it).
OUTPUT_EDITS = [
    ("GPT-2 init std", "gpt2train/model.py", "else 0.02\n", "else 0.021\n", "training"),
    ("the LR formula", "gpt2train/training/schedule.py", "math.cos(math.pi * progress)", "math.cos(math.pi * progress * 0.99)",
     "training"),
    ("an AdamW setting", "gpt2train/training/parallelize.py", "betas=(t.adam_beta1, t.adam_beta2)",
     "betas=(t.adam_beta1, t.adam_beta2 + 0.01)", "training"),
    ("the document prefix token", "gpt2train/data/tokenizer.py", "            out[i] = self.eot\n",
     "            out[i] = self.eot - 1\n", "shards"),
    ("the shard header", "gpt2train/data/shards.py", "header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, num_tokens",
     "header[0], header[1], header[2], header[3] = SHARD_MAGIC, SHARD_VERSION, num_tokens, 1", "shards"),
    ("the shard cut", "gpt2train/data/shard_writer.py", "self.shard_size, self.name_for, self.on_complete = shard_size,",
     "self.shard_size, self.name_for, self.on_complete = shard_size - 1,", "shards"),
    ("a kernel's math", "gpt2train/kernels/gelu.py", "    return 0.7978845608028654 * (u + 0.044715 * u * u * u)",
     "    return 0.7978845608028654 * (u + 0.0447 * u * u * u)", "triton_kernels"),
]


@pytest.mark.e2e
@pytest.mark.parametrize("what,file,old,new,stage", OUTPUT_EDITS, ids=[e[0] for e in OUTPUT_EDITS])
def test_an_edit_that_changes_an_output_is_caught_by_its_stage(tmp_path, what, file, old, new, stage):
    root = _copy_repo(tmp_path)
    _edit(root, file, old, new)
    result = _run(root, "--check", "--stage", stage)
    assert result.returncode == 1, f"{what}: the {stage} golden did not notice\n{result.stdout[-2000:]}"
    assert f"stage {stage}'s output changed while its version stayed" in result.stdout, result.stdout[-2000:]


IDENTITY = Path(__file__).resolve().parent / "golden" / "tiny_identity.json"


def test_the_tiny_presets_code_versions_and_run_tag_are_as_recorded(tiny_shards):
    """Recorded before gpt2train/ was regrouped into subpackages: moving code makes nothing stale. A
    deliberate change of a stage's output bumps its version, and then this file is re-recorded too
    (a failure prints the current values)."""
    from gpt2train.config import load_config
    from gpt2train.training.run_identity import run_tag

    now = {"code_versions": golden_outputs.code_versions(f"data_dir={tiny_shards}"),
           "run_tag": run_tag(load_config("tiny", [f"data_dir={tiny_shards}"]))}
    assert now == json.loads(IDENTITY.read_text()), json.dumps(now, indent=1)
