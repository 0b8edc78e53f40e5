"""The checks on a loaded config that its field types cannot express: `validate_config`, one per section.

    validate_config(cfg, where="configs/tiny.yaml")     # gpt2train/config.py's load_config runs it

Each error names the field and a valid value. Everything a stage would only find out after starting
(an unknown model.descriptor, a total batch the launched world cannot divide, an init_from
checkpoint of another shape) is checked here, before any work. Every number has a range
(NUMBER_RANGES; NaN and +-Inf are never in one), and data_dir and the written paths are places a
run may write (unsafe_write_place: not /, a system directory, the home directory itself, ~/.ssh).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2train.data.hf_dataset import is_dataset_source, parse_source
from gpt2train.errors import ConfigError, DataError, Gpt2TrainError
from gpt2train.layout import LINEAGE_FILE
from gpt2train.model_config import GPTConfig

if typing.TYPE_CHECKING:  # gpt2train/config.py imports this module to run it: no import back
    from gpt2train.config import Config, CorpusConfig, EvalsConfig, LaunchConfig

LR_SCHEDULES = ("cosine", "linear", "constant", "wsd")
OVERSIZE_DOCUMENTS = ("refuse", "split")  # corpus.oversize_documents
KERNEL_CHOICES = ("auto", "triton", "torch")  # train.kernels; resolved by gpt2train.kernels.resolve_kernels
# train.loggers -> the package each tracker imports (gpt2train/training/trackers.py); the `tracking` extra.
LOGGER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}
LAUNCH_BACKENDS = ("local", "slurm")  # launch.backend
# sbatch --time: minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S (`man sbatch`), or UNLIMITED.
SLURM_TIME = r"UNLIMITED|\d+(:\d+){0,2}|\d+-\d+(:\d+){0,2}"
# torchrun options the Slurm job script sets itself (gpt2train/training/slurm_job.py).
SLURM_MADE_TORCHRUN_ARGS = ("--nnodes", "--nproc-per-node", "--node-rank", "--standalone", "--rdzv-backend",
                            "--rdzv-endpoint", "--rdzv-id", "--rdzv-conf", "--master-addr", "--master-port")


@dataclass(frozen=True)
class Range:
    """The values a number field takes: [low, high], or (low, high] when `low_open`."""

    low: float
    high: float
    low_open: bool = False
    meaning: str = ""  # what a special value means, e.g. "-1 = one epoch", shown in the error

    def holds(self, value: float) -> bool:
        return (self.low < value if self.low_open else self.low <= value) and value <= self.high

    def __str__(self) -> str:
        def show(x: float) -> str:  # 2^40 and 2^31-1, not 1099511627776 and 2.14748e+09
            n = int(x)
            if n == x and n >= 4096 and n & (n - 1) == 0:
                return f"2^{n.bit_length() - 1}"
            if n == x and n >= 4096 and (n + 1) & n == 0:
                return f"2^{n.bit_length()}-1"
            return f"{x:g}"
        shown = f"{'(' if self.low_open else '['}{show(self.low)}, {show(self.high)}]"
        return f"{shown} ({self.meaning})" if self.meaning else shown


# More than any count a run reaches (steps, tokens per step, items, batches): ~1.1e12, exact in an
# int64 and a float64 (a 29-digit seed or step count overflows torch's int64 instead).
COUNT = 2**40
# The largest AdamW beta: below 1 (torch's AdamW refuses 1), with six nines to spare (0.999 and 0.9999 are used).
ADAM_BETA_MAX = 0.999999
# The range of every number field (`section.field`), checked by _check_ranges; a float must also be
# finite (YAML's .nan and .inf parse as floats). tests/test_config.py fails for a number field missing
# here. Tighter rules that depend on other fields (seq_len <= block_size, a total batch that B x T
# divides) are the specific checks'.
NUMBER_RANGES: dict[str, Range] = {
    "corpus.files": Range(1, COUNT, meaning="or null for all"),
    "corpus.max_documents_per_file": Range(1, COUNT, meaning="or null for all"),
    "corpus.max_document_chars": Range(1, COUNT),
    "shards.shard_size": Range(1, 2**31 - 1),  # llm.c's header holds the token count as an int32
    "shards.threads": Range(0, 4096, meaning="0 = one per core"), "shards.batch_documents": Range(1, 2**20),
    "model.block_size": Range(1, 2**20),
    "train.batch_size": Range(1, 2**20), "train.seq_len": Range(1, 2**20), "train.total_batch_tokens": Range(1, COUNT),
    "train.max_steps": Range(-1, COUNT, meaning=">= 1, or -1 for one epoch"),  # 0: _check_train_schedule
    "train.learning_rate": Range(0, 1), "train.warmup_steps": Range(0, COUNT), "train.final_lr_frac": Range(0, 1),
    "train.weight_decay": Range(0, 1),
    # torch's AdamW takes [0, 1); 1 itself never forgets and its bias correction divides by 1 - 1^t = 0.
    "train.adam_beta1": Range(0, ADAM_BETA_MAX), "train.adam_beta2": Range(0, ADAM_BETA_MAX),
    # 0 is no clipping (training/step.py clip_gradients), not a clip to 0, which would stop all learning.
    "train.grad_clip": Range(0, 1e6, meaning="0 = no clipping"),
    "train.val_every": Range(0, COUNT), "train.val_batches": Range(0, COUNT), "train.checkpoint_every": Range(0, COUNT),
    "train.keep_last": Range(0, COUNT), "train.major_every": Range(0, COUNT), "train.zero_stage": Range(0, 1),
    "train.recompute": Range(0, 2), "train.sample_every": Range(0, COUNT), "train.sample_tokens": Range(0, 2**20),
    "train.skip_loss_z": Range(0, 1e6, meaning="0 = off"), "train.skip_grad_z": Range(0, 1e6, meaning="0 = off"),
    "train.max_nonfinite_steps": Range(0, COUNT, meaning="0 = never stop"),
    "train.hellaswag_every": Range(-1, COUNT, meaning="0 = never, -1 = with val_every"),
    "train.hellaswag_items": Range(0, COUNT),
    "train.seed": Range(0, 2**63 - 1),  # torch.manual_seed takes an int64; numpy's generators any int >= 0
    "launch.nproc_per_node": Range(1, 4096),
    "launch.slurm.nodes": Range(1, 2**20), "launch.slurm.gpus_per_node": Range(0, 4096, meaning="0 = request none"),
    "launch.slurm.cpus_per_task": Range(0, 2**20, meaning="0 = Slurm's default"),
    "launch.slurm.pending_timeout_s": Range(0, 10**8, low_open=True), "launch.slurm.rdzv_port": Range(1, 65535),
    # The run worker touches the heartbeat every 2 s (slurm_job.POLL_S) but a slow `scontrol` delays a touch.
    "launch.slurm.heartbeat_timeout_s": Range(10, 10**8),
    "evals.limit": Range(1, COUNT, meaning="or null for all"), "evals.batch_size": Range(1, 2**20),
}

# Config paths that gpt2train *writes* under: they must stay inside data_dir (_check_written_paths).
# Every other path field is only read: corpus.source, train.train_glob / val_glob, train.hellaswag_file,
# train.init_from, evals.baselines_file and evals.local_data may live anywhere (a shared read-only
# mirror such as ../shared, a checkpoint of another project), and reading them writes nothing.
# (data_dir is the root itself; corpus.dataset and shards.prefix, which become path components, are
# checked by pattern in _check_path_components; model.descriptor by gpt2train/model_config.py's parser.)
WRITTEN_PATH_FIELDS = (("train", "out_dir"),)


# A decimal number with an optional exponent (`6e-4`, `1E6`, `-.5`, `3.`): what float() takes, less nan and inf.
# gpt2train/config.py reads such a string (PyYAML's `6e-4`) into a float field.
FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def int_hint(ftype: Any, value: Any) -> str:
    """What to write instead of a `1e5` or `1000.0` given to an int field (else ""). It is refused, not
    converted: llm.c's atoi reads `1e5` as 1, so its users must not meet a guess either way."""
    if ftype is not int or not isinstance(value, (str, float)) or not FLOAT_TEXT.fullmatch(str(value).strip()):
        return ""
    number = float(value)
    return (f" (an int field takes digits: write {int(number)})" if number.is_integer()
            else " (an int field takes a whole number, in digits)")


def validate_config(cfg: Config, where: str = "config", explicit: typing.Collection[str] = ()) -> None:
    """Range checks a type cannot express; each error names the field and a valid value. Everything a
    stage would only find out after starting (an unknown model.descriptor, a total batch the launched
    world cannot divide, an init_from checkpoint of another shape) is checked here, before any work.

    `explicit`: dotted keys set on the command line (`--set`, llm.c's `-o`); a written path given
    there may lie outside data_dir (see `_check_written_paths`)."""
    # The one thing settled here rather than checked: model.descriptor `custom` becomes init_from's shape
    # (and model.block_size its context), which every check below then sees as if written in the config.
    resolve_custom_shape(cfg, where)
    _check_ranges(cfg, where)  # first of the checks: those below do arithmetic on these numbers
    _check_corpus(cfg.corpus, where)
    _check_train_batch(cfg, where)
    _check_train_schedule(cfg, where)
    check_loggers(cfg.train.loggers, where)
    _check_evals(cfg.evals, where)
    _check_launch(cfg.launch, where)
    _check_path_components(cfg, where)
    model = _check_model(cfg, where)
    _check_data_dir(cfg, where)
    _check_written_paths(cfg, where, explicit)
    if cfg.train.init_from:
        _check_init_from(cfg, where, model)


def _check_corpus(c: CorpusConfig, where: str) -> None:
    if is_dataset_source(c.source):  # hf-dataset:<repo or folder>[:<config>] (gpt2train/data/hf_dataset.py)
        try:
            parse_source(c.source)
        except DataError as e:
            raise ConfigError(f"{where}: {e}") from None
    if not c.text_field:
        raise ConfigError(f"{where}: corpus.text_field is empty; name the column (or .jsonl key) holding the "
                          f"document text, e.g. text")
    if c.oversize_documents not in OVERSIZE_DOCUMENTS:
        raise ConfigError(f"{where}: corpus.oversize_documents={c.oversize_documents!r} is not one of "
                          f"{', '.join(OVERSIZE_DOCUMENTS)} (what to do with a document over corpus.max_document_chars)")


def _check_train_batch(cfg: Config, where: str) -> None:
    """B, T and the tokens per step (each >= 1: NUMBER_RANGES): T within the model's context, the total
    divisible by B x T x the world the `training_run` asset launches."""
    t = cfg.train
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
                          f"{t.batch_size * t.seq_len * world} (world = launch.nproc_per_node x the nodes: --nnodes, "
                          f"or launch.slurm.nodes); "
                          f"change the total, B or T, or the number of processes")


def _check_train_schedule(cfg: Config, where: str) -> None:
    """The rest of `train` that a range cannot say: steps, in-loop HellaSwag, kernels, the LR schedule."""
    t = cfg.train
    if t.max_steps == 0:  # the one hole in its range [-1, 2^40]
        raise ConfigError(f"{where}: train.max_steps={t.max_steps} must be >= 1, or -1 for one epoch")
    if t.hellaswag_every and not t.hellaswag_file:
        raise ConfigError(f"{where}: train.hellaswag_every={t.hellaswag_every} needs train.hellaswag_file (a "
                          f"HellaSwag-schema jsonl)")
    if t.kernels not in KERNEL_CHOICES:
        raise ConfigError(f"{where}: train.kernels={t.kernels!r}; use auto, triton or torch")
    if t.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"{where}: train.lr_schedule={t.lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}")


def check_loggers(loggers: list[str], where: str) -> None:
    """train.loggers: known trackers, each once, each one's package installed (the trainer imports it
    only when configured, so a missing one would otherwise surface after the run directory is taken)."""
    for name in loggers:
        if name not in LOGGER_PACKAGES:
            raise ConfigError(f"{where}: train.loggers: {name!r} is not a tracker; use "
                              f"{' and/or '.join(LOGGER_PACKAGES)}, e.g. [tensorboard, wandb]")
        if loggers.count(name) > 1:
            raise ConfigError(f"{where}: train.loggers lists {name} {loggers.count(name)} times; list it once")
        if importlib.util.find_spec(LOGGER_PACKAGES[name]) is None:
            raise ConfigError(f"{where}: train.loggers: {name} is not installed; pip install 'gpt2train[tracking]' "
                              f"(or remove {name} from train.loggers)")


def _check_evals(e: EvalsConfig, where: str) -> None:
    if not e.tasks:
        raise ConfigError(f"{where}: evals.tasks is empty; list at least one lm-eval task, e.g. [hellaswag]")
    for spec in e.tasks:
        parse_task_spec(spec)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", e.device):
        raise ConfigError(f"{where}: evals.device={e.device!r}; use auto (never a training GPU), cpu, cuda, "
                          f"cuda:N or mps")
    for path in e.reference_reports:
        check_reference_report(path)


def check_reference_report(path: str | Path) -> dict[str, Any]:
    """An `evals.reference_reports` entry: a finished report of `gpt2train eval` (lineage.json with
    artifact eval_report and export.reference true). Returns that lineage.json; one-line errors."""
    where, fix = f"evals.reference_reports: {path}", "make one with `gpt2train eval SOURCE --out DIR`"
    if not Path(path).is_dir():
        raise ConfigError(f"{where} is not a folder; {fix}, or fix the path (relative to the config file)")
    sidecar = Path(path) / LINEAGE_FILE
    if not sidecar.is_file():
        raise ConfigError(f"{where} has no lineage.json: not a finished eval report; {fix}")
    try:
        lineage = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: lineage.json is not valid JSON ({e}); {fix} again") from None
    artifact = lineage.get("artifact") if isinstance(lineage, dict) else None
    if artifact != "eval_report":
        raise ConfigError(f"{where} is not an eval report (lineage.json artifact={artifact!r}); {fix}")
    if (lineage.get("export") or {}).get("reference") is not True:
        raise ConfigError(f"{where} is a checkpoint's eval report, not a reference model's; {fix}")
    return lineage


def _check_launch(launch: LaunchConfig, where: str) -> None:
    if launch.backend not in LAUNCH_BACKENDS:
        raise ConfigError(f"{where}: launch.backend={launch.backend!r}; use local or slurm")
    s = launch.slurm  # its numbers are checked by _check_ranges (NUMBER_RANGES)
    if s.time_limit is not None and not re.fullmatch(SLURM_TIME, s.time_limit):
        raise ConfigError(f"{where}: launch.slurm.time_limit={s.time_limit!r} is not a Slurm time; use minutes "
                          f"(90), H:MM:SS (1:30:00) or D-HH:MM:SS (2-00:00:00)")
    if launch.backend == "slurm":
        # The job script makes the rendezvous itself (one agent per node, c10d on the first node).
        clash = [a for a in launch.torchrun_args if a.split("=", 1)[0].replace("_", "-") in SLURM_MADE_TORCHRUN_ARGS]
        if clash:
            raise ConfigError(f"{where}: launch.torchrun_args {clash} clash with launch.backend=slurm, whose job "
                              f"makes the rendezvous from launch.slurm.nodes; remove them (keep e.g. --max-restarts)")


def _check_ranges(cfg: Config, where: str) -> None:
    """Every number within its NUMBER_RANGES range; a float also finite (a NaN learning rate or clip
    would turn every weight into NaN at the first update)."""
    for dotted, allowed in NUMBER_RANGES.items():
        value: Any = cfg
        for name in dotted.split("."):
            value = getattr(value, name)
        if value is None:  # an optional count left unset: "all"
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: {dotted}={value} is not a finite number; use a value in {allowed}")
        if not allowed.holds(value):
            shown = value if abs(value) < 10**15 else f"{str(value)[:12]}... ({len(str(abs(value)))} digits)"
            raise ConfigError(f"{where}: {dotted}={shown} is out of range; use a value in {allowed}")


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


def _check_data_dir(cfg: Config, where: str) -> None:
    """data_dir itself, however it was given (a config file, --set): a folder of its own. The written
    paths are checked against it, so a received YAML with `data_dir: /` would otherwise let it write
    anywhere."""
    data = Path(cfg.data_dir).expanduser().resolve()
    unsafe = unsafe_write_place(data)
    if unsafe:
        raise ConfigError(f"{where}: data_dir={cfg.data_dir} resolves to {data}, {unsafe}; every artifact is "
                          f"written under data_dir: set it to a folder of its own, e.g. {Path.home() / 'gpt2-data'}")


# Where gpt2train never writes, whatever a config or --set says: inside system directories, into the
# filesystem root, a directory that holds users' or system files directly (home directories, /var,
# /tmp themselves; a folder inside them is fine), and into credential folders anywhere.
SYSTEM_DIRS = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev", "/proc",
               "/sys", "/run", "/System", "/Library", "/private/etc")
SHARED_ROOTS = ("/", "/home", "/root", "/Users", "/var", "/private/var", "/tmp", "/private/tmp")
CREDENTIAL_DIRS = (".ssh", ".gnupg", ".aws", ".kube", ".docker")


def unsafe_write_place(path: Path) -> str | None:
    """Why gpt2train must not write at the resolved `path` (a data_dir or a written path), or None."""
    if path == Path(path.anchor):
        return "the filesystem root"
    if any(path == Path(d) or path.is_relative_to(d) for d in SYSTEM_DIRS):
        return "a system directory"
    if path == Path.home().resolve():
        return "the home directory itself (not a folder of its own)"
    if path in {Path(d) for d in SHARED_ROOTS}:
        return "a directory that holds other users' or the system's files directly (not a folder of its own)"
    if any(part in CREDENTIAL_DIRS for part in path.parts):
        return "inside a credentials folder"
    return None


def _check_written_paths(cfg: Config, where: str, explicit: typing.Collection[str]) -> None:
    """A written path from a config file must resolve (`..` and symlinks followed) inside data_dir, so a
    YAML or preset received from someone else cannot make a run write over files elsewhere. A path the
    user types on the command line (`--set train.out_dir=...`, llm.c's `-o log124M` in docs/training.md)
    is their explicit choice and is allowed, unless it is a place no run may write (unsafe_write_place)."""
    data = Path(cfg.data_dir).expanduser().resolve()
    for path in WRITTEN_PATH_FIELDS:
        dotted = ".".join(path)
        obj: Any = cfg
        for part in path:
            obj = getattr(obj, part)
        if obj is None:
            continue
        target = Path(obj).expanduser().resolve()
        unsafe = unsafe_write_place(target)
        if unsafe:  # not even on the command line: a typo must not write into /etc or ~/.ssh
            raise ConfigError(f"{where}: {dotted}={obj} resolves to {target}, {unsafe}; choose a folder of "
                              f"its own inside data_dir, e.g. {data / 'runs' / target.name}")
        if dotted in explicit:
            continue
        if not target.is_relative_to(data):
            raise ConfigError(f"{where}: {dotted}={obj} resolves to {target}, outside data_dir={data}; a config "
                              f"may only write under its data_dir: use a path inside it (or leave {dotted} "
                              f"unset), or pass --set {dotted}=PATH on the command line to choose another place")


CUSTOM_FROM_INIT = "custom"  # model.descriptor: the shape of train.init_from, as llm.c's `-e FILE` builds it


def _init_from_shape(cfg: Config, where: str) -> GPTConfig:
    """The shape train.init_from holds, from its metadata only (a checkpoint's state.json, a config.json,
    an llm.c header): no weights read."""
    from gpt2train.weights import source_shape

    try:
        return source_shape(cfg.train.init_from)
    except Gpt2TrainError as e:
        raise ConfigError(f"{where}: train.init_from: {e}") from None


def resolve_custom_shape(cfg: Config, where: str) -> None:
    """model.descriptor `custom`: the weights' file decides the shape, as llm.c's `-e gpt2_124M.bin` does.
    It is replaced by that shape's own name (`d12` or a preset's where it is one, so a run it names keeps
    its tag; else `custom:L3-NH2-C64`) and model.block_size by the file's context: what the run tag,
    the checkpoints' state.json and an export record, so each can rebuild the model without the file."""
    if cfg.model.descriptor != CUSTOM_FROM_INIT:
        return
    if not cfg.train.init_from:
        raise ConfigError(f"{where}: model.descriptor=custom takes its shape from train.init_from, which is not "
                          f"set; set train.init_from (llm.c's -e FILE), or name a shape, e.g. custom:L3-NH2-C64")
    theirs = _init_from_shape(cfg, where)
    cfg.model.descriptor, cfg.model.block_size = theirs.descriptor(), theirs.block_size


def _check_init_from(cfg: Config, where: str, ours: GPTConfig) -> None:
    """train.init_from must hold the configured model shape (`ours`): read from its metadata now (no
    weights loaded), not found only after the trainer has built the model. An explicit descriptor that
    disagrees with the file is refused (`custom` would have taken the file's: resolve_custom_shape)."""
    t = cfg.train
    theirs = _init_from_shape(cfg, where)

    vocab_differs = (theirs.vocab_size, theirs.padded_vocab_size) != (ours.vocab_size, ours.padded_vocab_size)

    def shape(c: GPTConfig) -> str:  # the vocabulary only where it is what differs (llm.c headers hold V, Vp)
        return (f"n_layer={c.n_layer} n_head={c.n_head} n_embd={c.n_embd} block_size={c.block_size}"
                + (f" vocab_size={c.vocab_size} padded_vocab_size={c.padded_vocab_size}" if vocab_differs else ""))

    if (theirs.n_layer, theirs.n_head, theirs.n_embd, theirs.block_size, theirs.vocab_size,
            theirs.padded_vocab_size) != (ours.n_layer, ours.n_head, ours.n_embd, ours.block_size,
                                          ours.vocab_size, ours.padded_vocab_size):
        raise ConfigError(f"{where}: train.init_from={t.init_from} holds another model shape than model.descriptor="
                          f"{cfg.model.descriptor!r} (it has {shape(theirs)}; the config asks for {shape(ours)}); "
                          f"set model.descriptor / model.block_size to its shape ({theirs.descriptor()}, "
                          f"{theirs.block_size}; model.descriptor=custom takes both from the file), or pick weights "
                          f"of this shape")


def parse_task_spec(spec: str) -> tuple[str, int | None]:
    """`arc_challenge:25` -> ("arc_challenge", 25); `hellaswag` -> ("hellaswag", None)."""
    name, sep, shots = spec.partition(":")
    if not name or (sep and not shots.isdigit()):
        raise ConfigError(f"evals.tasks: {spec!r} is not `task` or `task:K` (K few-shot examples, an integer >= 0)")
    return name, int(shots) if sep else None
