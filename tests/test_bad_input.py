"""Bad input, one case per row: a clear error before any work.

Every case runs a real entry point the way a user reaches it (`gpt2train ...` in-process through
`gpt2train.cli.main`, `python -m gpt2train.train` through `gpt2train.train.main`, one real
subprocess, or the library call a Dagster asset makes) and asserts three things:

1. it fails as a user error: exit code 2 (CLI) or a `Gpt2TrainError` (library);
2. the message names the offending file / field / line and says what to do (every regex in
   `says` must match the one-line message);
3. before any work: the case's whole folder (data dir, inputs, output paths) is byte-for-byte the
   same afterwards (no run dir, checkpoint, shard, corpus record, export or report appeared).

    pytest tests/test_bad_input.py -k descriptor-unknown     # one case: the repro command

Writer-lock files (`.<artifact>.lock`, gpt2train/locks.py) are left out of the comparison: the
trainer takes its lock before it reads its inputs (see `_snapshot`).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from gpt2train.errors import Gpt2TrainError
from gpt2train.fileio import sha256_file
from tests.paths import HELLASWAG, REPO

# ------------------------------------------------------------------------------------------- fixtures


def _save_tiny_checkpoint(root: Path, state_descriptor: str) -> Path:
    """A complete checkpoint of the `tiny` shape whose state.json claims `state_descriptor`."""
    from gpt2train.training.checkpoint import save_checkpoint
    from gpt2train.config import config_to_dict, load_config
    from gpt2train.model import GPT, GPTConfig

    model = GPT(GPTConfig.from_descriptor("tiny", 64)).init_weights(0)
    cfg = load_config("tiny", [f"data_dir={root}"])
    cfg.model.descriptor = state_descriptor
    return save_checkpoint(root / "checkpoints", 2, model_state=model.state_dict(), optimizer_state={},
                           loader_state={}, state={"config": config_to_dict(cfg), "world": 1})


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return _save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-ckpt"), "tiny")


@pytest.fixture(scope="module")
def mislabeled_ckpt(tmp_path_factory) -> Path:
    """tiny weights, but a state.json that says `small` (another shape)."""
    return _save_tiny_checkpoint(tmp_path_factory.mktemp("mislabeled-ckpt"), "small")


@dataclass
class Ctx:
    """What a case builds its input from: its own folder `tmp` (snapshotted) and the fixtures."""

    tmp: Path
    shards: Path
    tiny_ckpt: Path
    mislabeled_ckpt: Path

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    def train_args(self, *sets: str) -> list[str]:
        """`gpt2train train --config tiny` on this case's data dir: two steps if it ever got going."""
        base = [f"data_dir={self.data}", "train.max_steps=2", "train.val_every=0", "train.hellaswag_every=0"]
        return ["train", "--config", "tiny", *[a for s in (*base, *sets) for a in ("--set", s)]]

    def write(self, rel: str, text: str | bytes) -> Path:
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text) if isinstance(text, bytes) else p.write_text(text)
        return p


@dataclass
class Case:
    id: str
    setup: Callable[[Ctx], Callable[[], object]]
    """Builds the inputs in ctx.tmp, returns what the user runs: a `("cli"|"train"|"proc", argv)`
    pair, or a zero-argument library call."""
    says: list[str]
    """Regexes the one-line error must all match: the file/field/line, and what to do."""


def cli(*argv):
    return ("cli", [str(a) for a in argv])


def train_main(*argv):
    return ("train", [str(a) for a in argv])


# ------------------------------------------------------------------------------------------- inputs


def _foreign_shard(ctx: Ctx, field_index: int, value: int) -> Path:
    """A copy of a real train shard with header int `field_index` (0 magic, 1 version) changed."""
    src = sorted(ctx.shards.glob("*_train_*.bin"))[0]
    dst = ctx.tmp / "foreign" / src.name
    dst.parent.mkdir(parents=True)
    raw = bytearray(src.read_bytes())
    raw[field_index * 4:(field_index + 1) * 4] = np.int32(value).tobytes()
    dst.write_bytes(bytes(raw))
    return dst


def _hellaswag_with_bad_line3(ctx: Ctx) -> Path:
    good = HELLASWAG.read_text().splitlines()[:2]
    return ctx.write("inputs/bad.jsonl", "\n".join(good + ['{"ctx": "a broken line', *good]) + "\n")


def _fake_export(ctx: Ctx, weights: bool = True) -> Path:
    """A folder that passes evals.runner.check_export up to what the case breaks."""
    d = ctx.tmp / "export"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_embd": 128}))
    (d / "lineage.json").write_text(json.dumps({"artifact": "hf_export"}))
    (d / "tokenizer.json").write_text("{}")
    if weights:
        (d / "model.safetensors").write_bytes(b"\0" * 16)
    return d


def _evals(local: Path | None = None):
    from gpt2train.config import EvalsConfig

    return EvalsConfig(tasks=["hellaswag"], limit=4, local_data=[f"hellaswag={local or HELLASWAG}"])


def _evaluate(ctx: Ctx, export: Path, ecfg):
    """The eval_report asset's library call on `export`, writing into the data dir's reports/."""
    from evals.runner import evaluate_export

    return lambda: evaluate_export(export, ctx.data / "reports" / "r", ecfg)


def _yaml(ctx: Ctx, body: str) -> Path:
    return ctx.write("inputs/bad.yaml", f"data_dir: {ctx.data}\n{body}")


CASES = [
    # --- config values (gpt2train/config_checks.py validate_config; the trainer never starts) --------
    Case("batch-indivisible", lambda c: cli(*c.train_args("train.total_batch_tokens=1000")),
         [r"train\.total_batch_tokens=1000", r"not a multiple of batch_size\*seq_len=256", r"pick B, T"]),
    Case("batch-world", lambda c: cli(*c.train_args("launch.nproc_per_node=3")),
         [r"train\.total_batch_tokens=512", r"4\*64\*3=768", r"launch\.nproc_per_node", r"change the total"]),
    Case("seq-over-context", lambda c: cli(*c.train_args("train.seq_len=128")),
         [r"train\.seq_len=128", r"model\.block_size=64", r"lower train\.seq_len or raise model\.block_size"]),
    Case("preset-unknown", lambda c: cli("train", "--config", "no_such_preset"),
         [r"--config no_such_preset: no such preset and no such file", r"shipped presets: .*gpt2_124m.*tiny",
          r"or give a YAML file's path"]),
    Case("descriptor-unknown", lambda c: cli(*c.train_args("model.descriptor=d13")),
         [r"model\.descriptor", r"'d13'", r"use one of d6, d12"]),
    Case("descriptor-unknown-llmc", lambda c: train_main("--config", "tiny", "--set", f"data_dir={c.data}",
                                                         "-e", "d13", "-x", "2"),
         [r"model\.descriptor", r"'d13'", r"use one of d6, d12"]),
    Case("descriptor-unknown-process", lambda c: ("proc", c.train_args("model.descriptor=gpt2:d7")),
         [r"model\.descriptor", r"gpt2:d7", r"use one of d6, d12"]),
    Case("schedule-unknown", lambda c: cli(*c.train_args("train.lr_schedule=exponential")),
         [r"train\.lr_schedule='exponential'", r"use one of cosine, linear, constant, wsd"]),
    Case("steps-zero", lambda c: cli(*c.train_args("train.max_steps=0")),
         [r"train\.max_steps=0", r"must be >= 1, or -1 for one epoch"]),
    Case("steps-negative", lambda c: cli(*c.train_args("train.max_steps=-5")),
         [r"train\.max_steps=-5 is out of range", r">= 1, or -1 for one epoch"]),
    # --- numbers: NaN / Inf and out of range (config_checks.py NUMBER_RANGES) --------------------------
    Case("grad-clip-nan", lambda c: cli(*c.train_args("train.grad_clip=.nan")),
         [r"train\.grad_clip=nan is not a finite number", r"use a value in \[0, 1e\+06\] \(0 = no clipping\)"]),
    Case("learning-rate-nan", lambda c: cli(*c.train_args("train.learning_rate=.nan")),
         [r"train\.learning_rate=nan is not a finite number", r"use a value in \[0, 1\]"]),
    Case("learning-rate-inf-yaml", lambda c: cli("train", "--config", _yaml(c, "train:\n  learning_rate: .inf\n")),
         [r"bad\.yaml: train\.learning_rate=inf is not a finite number", r"\[0, 1\]"]),
    Case("seed-29-digits", lambda c: cli(*c.train_args("train.seed=12345678901234567890123456789")),
         [r"train\.seed=123456789012\.\.\. \(29 digits\) is out of range", r"use a value in \[0, 2\^63-1\]"]),
    Case("weight-decay-negative", lambda c: cli(*c.train_args("train.weight_decay=-0.1")),
         [r"train\.weight_decay=-0\.1 is out of range", r"\[0, 1\]"]),
    # --- where a received config may write (data_dir itself, written paths inside it) ----------------
    Case("yaml-data-dir-root",  # the config checks itself against its own data_dir: that must be sane
         lambda c: cli("config", "--config", c.write("inputs/bad.yaml",
                                                     "data_dir: /\ntrain:\n  out_dir: /root/.ssh/gpt2run\n")),
         [r"bad\.yaml: data_dir=/ resolves to /, the filesystem root", r"set it to a folder of its own"]),
    Case("yaml-data-dir-system",
         lambda c: cli("config", "--config", c.write("inputs/bad.yaml", "data_dir: /etc/gpt2\n")),
         [r"bad\.yaml: data_dir=/etc/gpt2 .* a system directory", r"set it to a folder of its own"]),
    Case("set-data-dir-home", lambda c: cli("train", "--config", "tiny", "--set", f"data_dir={Path.home()}"),
         [r"data_dir=.* the home directory itself", r"set it to a folder of its own"]),
    Case("yaml-out-dir-credentials",
         lambda c: cli("config", "--config", _yaml(c, f"train:\n  out_dir: {Path.home() / '.ssh' / 'gpt2run'}\n")),
         [r"bad\.yaml: train\.out_dir=.*\.ssh/gpt2run .* inside a credentials folder", r"inside data_dir"]),
    Case("set-out-dir-system",  # --set may choose a place outside data_dir, never a system directory
         lambda c: cli(*c.train_args("train.out_dir=/usr/lib/gpt2run")),
         [r"train\.out_dir=/usr/lib/gpt2run .* a system directory", r"inside data_dir"]),
    # --- unknown keys --------------------------------------------------------------------------------
    Case("yaml-unknown-key", lambda c: cli("train", "--config", _yaml(c, "train:\n  max_step: 5\n")),
         [r"bad\.yaml", r"train: unknown key\(s\) 'max_step'", r"known: .*max_steps"]),
    Case("yaml-unknown-section", lambda c: cli("train", "--config", _yaml(c, "trian:\n  max_steps: 5\n")),
         [r"bad\.yaml", r"unknown key\(s\) 'trian'", r"known: .*train"]),
    Case("set-unknown-key", lambda c: cli(*c.train_args("train.max_step=5")),
         [r"--set train\.max_step", r"unknown key 'max_step' in train", r"known: .*max_steps"]),
    # --- a corpus with no text (`gpt2train prepare`) -------------------------------------------------
    Case("corpus-empty-folder",
         lambda c: cli("prepare", "--source", c.write("src/README", "no corpus here").parent,
                       "--out", c.data / "shards"),
         [r"corpus\.source .*src holds no \.parquet, \.jsonl, \.txt files", r"point corpus\.source"]),
    Case("corpus-empty-file",
         lambda c: cli("prepare", "--source", c.write("src/a.jsonl", ""), "--out", c.data / "shards"),
         [r"a\.jsonl: the file is empty", r"delete it"]),
    Case("corpus-blank-text",
         lambda c: cli("prepare", "--source", c.write("src/a.jsonl", '{"text": ""}\n{"text": "  \\n"}\n'),
                       "--out", c.data / "shards"),
         [r"a\.jsonl: 2 document\(s\), every one empty or blank in field 'text'", r"fill it"]),
    Case("corpus-blank-second-file",  # the first file is fine: still nothing written for it
         lambda c: (c.write("src/a.jsonl", '{"text": "Some text."}\n'),
                    cli("prepare", "--source", c.write("src/b.jsonl", '{"text": ""}\n').parent,
                        "--out", c.data / "shards"))[1],
         [r"b\.jsonl: 1 document\(s\), every one empty or blank", r"remove the file from the corpus or fill it"]),
    # --- token shards from another tokenizer / format ------------------------------------------------
    Case("shard-magic",
         lambda c: cli(*c.train_args(f"train.train_glob={_foreign_shard(c, 0, 20240801)}")),
         [r"foreign/edu_fineweb_train_\d+\.bin: magic 20240801", r"llama-3",
          r"regenerate it with `gpt2train prepare`"]),
    Case("shard-version",
         lambda c: cli(*c.train_args(f"train.train_glob={_foreign_shard(c, 1, 2)}")),
         [r"foreign/edu_fineweb_train_\d+\.bin: version 2, expected 1", r"regenerate it with `gpt2train prepare`"]),
    # --- a checkpoint of another model shape ----------------------------------------------------------
    Case("init-from-shape",
         lambda c: cli(*c.train_args("model.descriptor=small", f"train.init_from={c.tiny_ckpt}")),
         [r"train\.init_from=.*step_00000002 holds another model shape than model\.descriptor='small'",
          r"n_layer=2 n_head=2 n_embd=128", r"set model\.descriptor / model\.block_size to its shape"]),
    Case("init-from-context",  # same layers, another block_size: wpe does not fit
         lambda c: cli(*c.train_args("model.block_size=128", f"train.init_from={c.tiny_ckpt}")),
         [r"train\.init_from=.* holds another model shape", r"block_size=64", r"block_size=128"]),
    Case("init-from-descriptor",  # an unknown descriptor with an init_from: the descriptor is named first
         lambda c: cli(*c.train_args("model.descriptor=d13", f"train.init_from={c.tiny_ckpt}")),
         [r"model\.descriptor", r"'d13'", r"use one of d6, d12"]),
    Case("init-from-missing",
         lambda c: cli(*c.train_args(f"train.init_from={c.tmp / 'no-such-ckpt'}")),
         [r"train\.init_from: .*no-such-ckpt does not exist", r"give a complete checkpoint"]),
    Case("export-shape", lambda c: cli("export", c.mislabeled_ckpt, c.data / "exports" / "x"),
         [r"step_00000002: model\.safetensors is not the GPT-2 state\.json describes", r"descriptor='small'",
          r"wrong shapes", r"state\.json does not belong to it"]),
    # --- an export without weights, given to the evals runner (what the eval_report asset calls) -----
    Case("export-no-weights", lambda c: _evaluate(c, _fake_export(c, weights=False), _evals()),
         [r"export is not a GPT-2 Hugging Face export: model\.safetensors missing", r"export the checkpoint again"]),
    # --- a malformed HellaSwag line, named by number --------------------------------------------------
    Case("hellaswag-line-train",  # the in-loop scorer (gpt2train/training/hellaswag.py), through `gpt2train train`
         lambda c: cli(*c.train_args("train.hellaswag_every=-1", "train.val_every=1",
                                     f"train.hellaswag_file={_hellaswag_with_bad_line3(c)}")),
         [r"bad\.jsonl:3: not a HellaSwag item", r"fix or remove the line"]),
    Case("hellaswag-line-evals",  # the harness's local data (evals/tasks.py), before its 20 s task index
         lambda c: _evaluate(c, _fake_export(c), _evals(_hellaswag_with_bad_line3(c))),
         [r"bad\.jsonl:3: not a valid hellaswag item", r"fix or remove the line"]),
]


# ------------------------------------------------------------------------------------------- runner


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under root -> its sha256 ("dir" for folders). Writer locks are taken only after
    every input check, so not even a lock file may appear."""
    return {p.relative_to(root).as_posix(): "dir" if p.is_dir() else sha256_file(p) for p in sorted(root.rglob("*"))}


def _run(action) -> tuple[int, str]:
    """(exit code, the error line) of a case's action."""
    if callable(action):
        try:
            action()
        except Gpt2TrainError as e:
            return 2, str(e)
        return 0, ""
    kind, argv = action
    if kind == "proc":
        exe = shutil.which("gpt2train") or pytest.fail("the gpt2train console script is not installed")
        r = subprocess.run([exe, "-q", *argv], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        lines = [line for line in r.stderr.splitlines() if "error:" in line]
        return r.returncode, lines[-1] if lines else r.stderr[-2000:]
    from gpt2train import cli as cli_mod
    from gpt2train import train as train_mod

    main = cli_mod.main if kind == "cli" else train_mod.main
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    lines = [line for line in err.getvalue().splitlines() if ": error: " in line]
    return code, lines[-1] if lines else err.getvalue()[-2000:]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_clearly_before_any_work(case, tmp_path, tiny_shards, tiny_ckpt, mislabeled_ckpt,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    shards = tiny_shards / "shards"
    ctx = Ctx(tmp_path / "case", shards, tiny_ckpt, mislabeled_ckpt)
    shutil.copytree(shards, ctx.data / "shards")  # a data dir as after `prepare`: real shards, sidecars
    action = case.setup(ctx)
    before = _snapshot(ctx.tmp)
    ckpt_before = {p: _snapshot(p) for p in (tiny_ckpt, mislabeled_ckpt)}

    code, message = _run(action)

    assert code == 2, f"expected a user error (exit 2), got {code}: {message}"
    assert "\n" not in message.strip() and "Traceback" not in message
    for pattern in case.says:
        assert re.search(pattern, message), f"{pattern!r} not in the error:\n{message}"
    after = _snapshot(ctx.tmp)
    assert after == before, (f"work happened before the error: new {sorted(set(after) - set(before))}, "
                             f"changed {sorted(k for k in before if after.get(k) != before[k])}")
    assert ckpt_before == {p: _snapshot(p) for p in (tiny_ckpt, mislabeled_ckpt)}
