"""The checks on a loaded config that its field types cannot express: `validate_config`, one per section.

    validate_config(cfg, where="configs/tiny.yaml")     # gpt2train/config.py's load_config runs it

Each error names the field and a valid value. Everything a stage would only find out after starting
(an unknown model.descriptor, a total batch the launched world cannot divide, an init_from
checkpoint of another shape) is checked here, before any work.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

from gpt2train.errors import ConfigError, Gpt2TrainError
from gpt2train.model_config import GPTConfig

if typing.TYPE_CHECKING:  # gpt2train/config.py imports this module to run it: no import back
    from gpt2train.config import Config, CorpusConfig, EvalsConfig, LaunchConfig, ShardsConfig

LR_SCHEDULES = ("cosine", "linear", "constant", "wsd")
KERNEL_CHOICES = ("auto", "triton", "torch")  # train.kernels; resolved by gpt2train.kernels.resolve_kernels

# Config paths that gpt2train *writes* under: they must stay inside data_dir (_check_written_paths).
# Every other path field is only read: corpus.source, train.train_glob / val_glob, train.hellaswag_file,
# train.init_from, evals.baselines_file and evals.local_data may live anywhere (a shared read-only
# mirror such as ../shared, a checkpoint of another project), and reading them writes nothing.
# (data_dir is the root itself; corpus.dataset and shards.prefix, which become path components, are
# checked by pattern in _check_path_components; model.descriptor by gpt2train/model_config.py's parser.)
WRITTEN_PATH_FIELDS = (("train", "out_dir"),)


def validate_config(cfg: Config, where: str = "config", explicit: typing.Collection[str] = ()) -> None:
    """Range checks a type cannot express; each error names the field and a valid value. Everything a
    stage would only find out after starting (an unknown model.descriptor, a total batch the launched
    world cannot divide, an init_from checkpoint of another shape) is checked here, before any work.

    `explicit`: dotted keys set on the command line (`--set`, llm.c's `-o`); a written path given
    there may lie outside data_dir (see `_check_written_paths`)."""
    _check_shards(cfg.shards, where)
    _check_corpus(cfg.corpus, where)
    _check_train_batch(cfg, where)
    _check_train_schedule(cfg, where)
    _check_evals(cfg.evals, where)
    _check_launch(cfg.launch, where)
    _check_path_components(cfg, where)
    model = _check_model(cfg, where)
    _check_written_paths(cfg, where, explicit)
    if cfg.train.init_from:
        _check_init_from(cfg, where, model)


def _check_shards(s: ShardsConfig, where: str) -> None:
    if not 1 <= s.shard_size < 2**31:
        raise ConfigError(f"{where}: shards.shard_size={s.shard_size} must be in [1, 2^31) tokens (llm.c's header holds an int32)")
    if s.threads < 0:
        raise ConfigError(f"{where}: shards.threads={s.threads} must be >= 0 (0 = one per core)")
    if s.batch_documents < 1:
        raise ConfigError(f"{where}: shards.batch_documents={s.batch_documents} must be >= 1")


def _check_corpus(c: CorpusConfig, where: str) -> None:
    for name in ("files", "max_documents_per_file"):
        value = getattr(c, name)
        if value is not None and value < 1:
            raise ConfigError(f"{where}: corpus.{name}={value} must be >= 1, or null for all")


def _check_train_batch(cfg: Config, where: str) -> None:
    """B, T and the tokens per step: positive, T within the model's context, the total divisible by
    B x T x the world the `training_run` asset launches."""
    t = cfg.train
    for name in ("batch_size", "seq_len", "total_batch_tokens"):
        if getattr(t, name) < 1:
            raise ConfigError(f"{where}: train.{name}={getattr(t, name)} must be >= 1")
    if t.seq_len > cfg.model.block_size:
        raise ConfigError(f"{where}: train.seq_len={t.seq_len} exceeds model.block_size={cfg.model.block_size} "
                          f"(the model's context); lower train.seq_len or raise model.block_size")
    if t.total_batch_tokens % (t.batch_size * t.seq_len):
        raise ConfigError(f"{where}: train.total_batch_tokens={t.total_batch_tokens} is not a multiple of "
                          f"batch_size*seq_len={t.batch_size * t.seq_len}; pick B, T and the total so it divides")
    world = cfg.launch.world_size
    if world > 1 and t.total_batch_tokens % (t.batch_size * t.seq_len * world):
        # The trainer checks this again against the real world size (torchrun by hand); here it is
        # caught before the `training_run` asset launches anything.
        raise ConfigError(f"{where}: train.total_batch_tokens={t.total_batch_tokens} is not a multiple of "
                          f"batch_size*seq_len*world={t.batch_size}*{t.seq_len}*{world}="
                          f"{t.batch_size * t.seq_len * world} (world = launch.nproc_per_node x --nnodes); "
                          f"change the total, B or T, or the number of processes")


def _check_train_schedule(cfg: Config, where: str) -> None:
    """The rest of `train`: steps, intervals, memory options, kernels, the learning-rate schedule."""
    t = cfg.train
    if t.max_steps == 0 or t.max_steps < -1:
        raise ConfigError(f"{where}: train.max_steps={t.max_steps} must be >= 1, or -1 for one epoch")
    if t.max_nonfinite_steps < 0:
        raise ConfigError(f"{where}: train.max_nonfinite_steps={t.max_nonfinite_steps} must be >= 0 (0 = never stop)")
    if t.zero_stage not in (0, 1) or t.recompute not in (0, 1, 2):
        raise ConfigError(f"{where}: train.zero_stage must be 0 or 1 and train.recompute 0, 1 or 2")
    for name in ("val_every", "val_batches", "checkpoint_every", "sample_every", "sample_tokens", "keep_last",
                 "major_every"):
        if getattr(t, name) < 0:
            raise ConfigError(f"{where}: train.{name}={getattr(t, name)} must be >= 0")
    if t.hellaswag_every < -1 or (t.hellaswag_every and not t.hellaswag_file):
        raise ConfigError(f"{where}: train.hellaswag_every={t.hellaswag_every} needs train.hellaswag_file (a "
                          f"HellaSwag-schema jsonl) and must be >= -1")
    if t.kernels not in KERNEL_CHOICES:
        raise ConfigError(f"{where}: train.kernels={t.kernels!r}; use auto, triton or torch")
    if t.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"{where}: train.lr_schedule={t.lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
    if not 0.0 <= t.final_lr_frac <= 1.0 or t.warmup_steps < 0:
        raise ConfigError(f"{where}: train.final_lr_frac must be in [0, 1] and train.warmup_steps >= 0")


def _check_evals(e: EvalsConfig, where: str) -> None:
    if not e.tasks:
        raise ConfigError(f"{where}: evals.tasks is empty; list at least one lm-eval task, e.g. [hellaswag]")
    for spec in e.tasks:
        parse_task_spec(spec)
    if (e.limit is not None and e.limit < 1) or e.batch_size < 1:
        raise ConfigError(f"{where}: evals.limit must be >= 1 (or null for all) and evals.batch_size >= 1")


def _check_launch(launch: LaunchConfig, where: str) -> None:
    if launch.nproc_per_node < 1:
        raise ConfigError(f"{where}: launch.nproc_per_node={launch.nproc_per_node} must be >= 1")


def _check_path_components(cfg: Config, where: str) -> None:
    """shards.prefix and corpus.dataset, which become parts of paths under data_dir."""
    s, c = cfg.shards, cfg.corpus
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", s.prefix):
        raise ConfigError(f"{where}: shards.prefix={s.prefix!r} may only hold letters, digits, '_', '-' and '.'")
    # corpus.dataset names the download folder <data_dir>/corpus/hub/<dataset>: the Hub's own repo id
    # rules (huggingface_hub validate_repo_id), so it can be neither absolute nor climb out with `..`.
    if not re.fullmatch(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*", c.dataset) or ".." in c.dataset:
        raise ConfigError(f"{where}: corpus.dataset={c.dataset!r} is not a Hub repo id (`owner/name`: letters, "
                          f"digits, '_', '-', '.', no '..'); e.g. HuggingFaceFW/fineweb-edu")


def _check_model(cfg: Config, where: str) -> GPTConfig:
    """model.descriptor through the model's own parser (gpt2train/model_config.py), so a typo fails at
    config load, not when training starts. (block_size >= 1 follows from 1 <= seq_len <= block_size.)"""
    try:
        return GPTConfig.from_descriptor(cfg.model.descriptor, cfg.model.block_size)
    except ValueError as e:
        raise ConfigError(f"{where}: model.descriptor: {e}") from None


def _check_written_paths(cfg: Config, where: str, explicit: typing.Collection[str]) -> None:
    """A written path from a config file must resolve (`..` and symlinks followed) inside data_dir, so a
    YAML or preset received from someone else cannot make a run write over files elsewhere. A path the
    user types on the command line (`--set train.out_dir=...`, llm.c's `-o log124M` in docs/training.md)
    is their explicit choice and is allowed."""
    data = Path(cfg.data_dir).expanduser().resolve()
    for path in WRITTEN_PATH_FIELDS:
        dotted = ".".join(path)
        obj: Any = cfg
        for part in path:
            obj = getattr(obj, part)
        if obj is None or dotted in explicit:
            continue
        target = Path(obj).expanduser().resolve()
        if not target.is_relative_to(data):
            raise ConfigError(f"{where}: {dotted}={obj} resolves to {target}, outside data_dir={data}; a config "
                              f"may only write under its data_dir: use a path inside it (or leave {dotted} "
                              f"unset), or pass --set {dotted}=PATH on the command line to choose another place")


def _check_init_from(cfg: Config, where: str, ours: GPTConfig) -> None:
    """train.init_from must hold the configured model shape (`ours`): read from its metadata now (no
    weights loaded: a checkpoint's state.json, a config.json, an llm.c header), not found only after
    the trainer has built the model."""
    from gpt2train.weights import source_shape  # imports torch: only when init_from is set

    t = cfg.train
    try:
        theirs = source_shape(t.init_from)
    except Gpt2TrainError as e:
        raise ConfigError(f"{where}: train.init_from: {e}") from None

    def shape(c: GPTConfig) -> str:
        return f"n_layer={c.n_layer} n_head={c.n_head} n_embd={c.n_embd} block_size={c.block_size}"

    if (theirs.n_layer, theirs.n_head, theirs.n_embd, theirs.block_size, theirs.vocab_size) != \
            (ours.n_layer, ours.n_head, ours.n_embd, ours.block_size, ours.vocab_size):
        raise ConfigError(f"{where}: train.init_from={t.init_from} holds another model shape than model.descriptor="
                          f"{cfg.model.descriptor!r} (it has {shape(theirs)}; the config asks for {shape(ours)}); "
                          f"set model.descriptor / model.block_size to its shape or pick weights of this shape")


def parse_task_spec(spec: str) -> tuple[str, int | None]:
    """`arc_challenge:25` -> ("arc_challenge", 25); `hellaswag` -> ("hellaswag", None)."""
    name, sep, shots = spec.partition(":")
    if not name or (sep and not shots.isdigit()):
        raise ConfigError(f"evals.tasks: {spec!r} is not `task` or `task:K` (K few-shot examples, an integer >= 0)")
    return name, int(shots) if sep else None
