"""The config tree: one typed dataclass per pipeline stage, read from a YAML preset.

    cfg = load_config("tiny", overrides=["shards.shard_size=200000"])
    cfg.shards.shard_size  # -> 200000

Every stage reads its own section (`cfg.corpus`, `cfg.shards`, ...), and that section's
contents are part of the stage's code version (see `gpt2train/lineage/records.py`), so changing
a value marks exactly that stage and its downstream stale in Dagster.

Rules, enforced by `load_config`:
- unknown keys in the YAML or in `--set` are errors (a typo must never be ignored);
- values are checked against the field's type (`"1e5"` is not an int);
- what a type cannot express (every number's range, finite floats, a total batch the world divides,
  a known model.descriptor, a sane data_dir and written paths inside it) is checked by
  gpt2train/config_checks.py;
- relative paths in a YAML file of your own are resolved against that file's folder, so it works
  from any working directory; in a preset shipped with the package (gpt2train/configs/) they are
  resolved against the working directory (`data_dir: data` is `./data`), as nothing of yours lives
  next to the installed package; in `--set` they are resolved against the working directory too.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpt2train.config_checks import FLOAT_TEXT, int_hint, validate_config
from gpt2train.config_paths import (CONFIG_DIR, is_shipped_preset, preset_path, resolve_field, resolve_paths,
                                    shipped_presets)
from gpt2train.errors import ConfigError



@dataclass
class CorpusConfig:
    """Where the raw documents come from (the `corpus` asset, `gpt2train prepare`)."""

    source: str = "hub"
    """`hub` to download from the Hugging Face Hub, or a local path: a mirror with the Hub's
    layout (e.g. `../shared/data/edu-mini`), a folder of .parquet/.jsonl/.txt files, one
    such file, or a glob. Or `hf-dataset:<repo>[:<config>]`: any Hugging Face dataset (a Hub
    repo id or a local dataset folder), its config's train split streamed through `datasets`
    without downloading the files, one partition per data file (gpt2train/data/hf_dataset.py);
    `corpus.revision` applies, `dataset` and `name` do not."""
    dataset: str = "HuggingFaceFW/fineweb-edu"
    """Hub dataset repo id (also used to name the corpus in lineage for local mirrors)."""
    name: str = "sample-10BT"
    """Hub config name; selects the files `sample/10BT/*.parquet` (`sample-100BT`,
    `CC-MAIN-2024-10`, `default` work the same way). In a local mirror the same sub-folder
    is used if it exists."""
    revision: str = "main"
    """Hub revision (branch, tag or commit sha). The commit it resolved to is recorded in
    each partition's lineage; pin a commit sha for a reproducible corpus."""
    files: int | None = None
    """Take only the first N source files in source (sorted path) order; None = all."""
    max_documents_per_file: int | None = None
    """Take only the first N documents of each source file; None = all."""
    text_field: str = "text"
    """Column (parquet, an hf-dataset) or key (jsonl) holding the document text."""
    max_document_chars: int = 4_000_000
    """Longest document, in characters, that is tokenized whole. tiktoken needs up to ~50 bytes per
    character for a document with no whitespace (4 M characters: ~200 MB and ~4 s on one core), so
    one pathological document could otherwise take the machine down. FineWeb keeps no document
    over 100,000 words (its Gopher quality filter): ordinary text of that length is well under 1 M
    characters."""
    oversize_documents: str = "refuse"
    """A document over `max_document_chars`: `refuse` (stop, naming its file and row; nothing is
    published) or `split` (tokenize it in pieces of at most `max_document_chars` characters, each
    cut just before whitespace where the piece has any, which leaves its tokens exactly those of
    the whole document; only a piece with no whitespace to cut at changes a token at its end).
    One <|endoftext|> still opens the document."""


@dataclass
class ShardsConfig:
    """How documents become llm.c `.bin` token shards (the `token_shards` asset)."""

    tokenizer: str = "gpt2"
    """tiktoken encoding name; only GPT-2's BPE (`gpt2`, alias `r50k_base`) fits uint16
    shards with GPT-2's vocabulary."""
    shard_size: int = 100_000_000
    """Tokens per shard, as llm.c's `dev/data/fineweb.py -s` (the last shard holds the rest)."""
    prefix: str = "edu_fineweb"
    """File name prefix: `<prefix>_val_000000.bin`, `<prefix>_train_000001.bin`, ..."""
    val_file: str | None = None
    """Source file (partition key) whose first `shard_size` tokens are the validation shard
    when shards are written per source file (the Dagster asset). None = the first file in
    source order, which is where llm.c's validation tokens come from too."""
    threads: int = 0
    """Tokenizer threads; 0 = one per CPU core."""
    batch_documents: int = 512
    """Documents read and tokenized per batch; bounds memory (streaming)."""


@dataclass
class ModelConfig:
    """The GPT-2 shape (gpt2train/model.py)."""

    descriptor: str = "d12"
    """llm.c's `-e`: d6, d12 (124M), d24 (350M), d36 (774M), d48 (1558M), `gpt2:dN`, a CPU preset from
    gpt2train/model_config.py's MODEL_PRESETS (e.g. `tiny`), any shape as `custom:L3-NH2-C64`, or `custom`:
    train.init_from's shape (llm.c's `-e FILE`), replaced at load by its name, and block_size by its context."""
    block_size: int = 1024
    """Maximum sequence length (positions in `wpe`)."""


@dataclass
class TrainConfig:
    """The training run (gpt2train/training/loop.py); llm.c's flag for each field in brackets."""

    train_glob: str | None = None
    """[-i] Train shards; None = `<data_dir>/shards/<shards.prefix>_train_*.bin`."""
    val_glob: str | None = None
    """[-j] Validation shards; None = `<data_dir>/shards/<shards.prefix>_val_*.bin`."""
    out_dir: str | None = None
    """[-o] Checkpoints and logs; None = `<data_dir>/runs/<descriptor>`."""
    batch_size: int = 64
    """[-b] Micro-batch size B per process."""
    seq_len: int = 1024
    """[-t] Sequence length T."""
    total_batch_tokens: int = 524288
    """[-d] Tokens per optimizer step; gradient accumulation = this / (B * T * world size)."""
    max_steps: int = -1
    """[-x] Optimizer steps; -1 = one epoch of the train shards."""
    learning_rate: float = 6e-4
    """[-l] Peak learning rate."""
    lr_schedule: str = "cosine"
    """[-k] cosine | linear | constant | wsd."""
    warmup_steps: int = 700
    """[-u] Linear warmup steps."""
    final_lr_frac: float = 0.0
    """[-q] Final learning rate as a fraction of the peak."""
    weight_decay: float = 0.1
    """[-c] AdamW weight decay, applied to 2-D weights only."""
    adam_beta1: float = 0.9
    """AdamW's beta1 (llm.c's CUDA trainer and its CPU trainer train_gpt2.c: 0.9)."""
    adam_beta2: float = 0.95
    """AdamW's beta2 (llm.c's CUDA trainer: 0.95; train_gpt2.c: 0.999)."""
    grad_clip: float = 1.0
    """Gradient-norm clipping threshold; 0 = no clipping (the norm is still computed, logged and used by -sg)."""
    val_every: int = 250
    """[-v] Validation loss at step 0, every N steps, at every checkpoint and at the last step (0 = never).
    Step s is the model after s updates, as in llm.c."""
    val_batches: int = 20
    """[-m] Validation batches per evaluation."""
    checkpoint_every: int = 0
    """[-n] Checkpoint every N steps (0 = only at the end)."""
    keep_last: int = 0
    """[-nk] Keep the newest K checkpoints (0 = all)."""
    major_every: int = 0
    """[-nm] Never delete checkpoints at multiples of M steps."""
    resume: bool = True
    """[-y] Resume from the latest complete checkpoint in out_dir."""
    zero_stage: int = 0
    """[-z] 1 = ZeRO-1: shard the AdamW state across ranks (torch ZeroRedundancyOptimizer)."""
    recompute: int = 0
    """[-r] Activation recompute: 0 none, 1 the MLP, 2 the MLP and LayerNorms (whole blocks)."""
    sample_every: int = 250
    """[-s] Print a sample every N steps and at the last step (0 = never, as llm.c's -s 0)."""
    sample_tokens: int = 64
    """[-g] Tokens per sample."""
    skip_loss_z: float = 0.0
    """[-sl] Skip the update when the loss z-score over the last 128 steps exceeds this (0 = off)."""
    skip_grad_z: float = 0.0
    """[-sg] Skip the update when the grad-norm z-score over the last 128 steps exceeds this (0 = off)."""
    max_nonfinite_steps: int = 5
    """A step whose loss, gradient norm, clip coefficient or learning rate is NaN or Inf never updates the
    weights: it is skipped and counted. After this many such steps in a row the run stops, naming the
    step and the last good checkpoint (0 = never stop; the run keeps skipping)."""
    verify_shards: bool = True
    """Hash the train and val shards before training reads them and compare with their sidecars' sha256
    (a changed shard is found before it trains the model; ~1 s per GB on one core): once per launch, the
    ranks a share each, and only shards no verification record vouches for (docs/training.md)."""
    hellaswag_every: int = 0
    """[-h] In-loop HellaSwag accuracy every N steps, at every checkpoint and at the last step (llm.c's
    scorer; not at step 0, as llm.c); 0 = never, -1 = with val_every (llm.c's `-h 1`)."""
    hellaswag_file: str | None = None
    """HellaSwag-schema jsonl for the in-loop eval (required with -h): a path, or an http(s) URL that is
    downloaded once into `<data_dir>/hellaswag/` (the gpt2_* presets give llm.c's: HellaSwag's own
    hellaswag_val.jsonl on GitHub)."""
    hellaswag_items: int = 0
    """Score only the first N items (0 = all)."""
    init_from: str | None = None
    """[-e PATH] Start from these weights (not resumed: step 0): one of our checkpoint directories, a
    Hugging Face GPT-2 directory (OpenAI's GPT-2 saved with save_pretrained, an export) or an llm.c
    model file such as gpt2_124M.bin (gpt2train/weights.py)."""
    bf16: bool = True
    """bf16 autocast on CUDA (ignored on CPU, where training is fp32)."""
    master_weights: bool = True
    """[-w] Keep fp32 master weights with bf16 on CUDA; 0 = train in pure bf16."""
    tf32: bool = True
    """[-f] Allow TF32 matmuls on CUDA (fp32 runs; under bf16 autocast only the fp32 leftovers)."""
    compile: bool = False
    """torch.compile the model (each block and the head; minutes of compile time on first use)."""
    kernels: str = "auto"
    """[--kernels] Hot-path ops: `triton` (gpt2train/kernels: fused LayerNorm, GELU, flash attention,
    classifier), `torch` (PyTorch's), or `auto`: Triton on CUDA, PyTorch elsewhere. Triton on a
    CPU runs in its interpreter: correct, for tests, far too slow to train."""
    overfit_batch: bool = False
    """[-a] Train on the first batch over and over (a correctness check: the loss must go to ~0)."""
    shuffle: bool = True
    """Permute the shard order and each shard's batches every epoch (llm.c's training loader does)."""
    seed: int = 1337
    """Initialisation, data order and sampling seed."""
    loggers: list[str] = field(default_factory=list)
    """Experiment trackers, off by default: `tensorboard` (event files in `<run>/tensorboard/`) and/or `wandb`
    (Weights & Biases, files in `<run>/wandb/`; WANDB_MODE=offline, WANDB_PROJECT, WANDB_ENTITY honoured).
    Rank 0 logs every metrics.jsonl record at its step, and each eval report's scores at its checkpoint's
    step (gpt2train/training/trackers.py). Needs `pip install 'gpt2train[tracking]'`; not part of the run tag."""


@dataclass
class SlurmConfig:
    """The Slurm job the `training_run` asset submits with `launch.backend: slurm` (pipelines/slurm_pipes.py):
    `sbatch` of a script that runs `srun torchrun` once per node, c10d rendezvous on the first node."""

    partition: str | None = None
    """`sbatch --partition`; None = the cluster's default partition. Checked with `scontrol` before submitting."""
    nodes: int = 1
    """`sbatch --nodes`: one torchrun agent per node, each with launch.nproc_per_node processes."""
    gpus_per_node: int = 0
    """`sbatch --gpus-per-node` (0 = request none: CPU training, or a cluster that gives whole nodes)."""
    cpus_per_task: int = 0
    """`sbatch --cpus-per-task` for each node's torchrun agent and its processes (0 = Slurm's default)."""
    time_limit: str | None = None
    """`sbatch --time`, e.g. `2-00:00:00` or `90` (minutes); None = the partition's limit. A job ended by
    it fails the Dagster run; the next materialization resumes from the last complete checkpoint."""
    sbatch_args: list[str] = field(default_factory=list)
    """More `sbatch` options, e.g. [--account=proj, --qos=high, --exclusive]."""
    pending_timeout_s: float = 3600.0
    """A job still pending (queued, not started) after this many seconds is cancelled and the run fails."""
    heartbeat_timeout_s: float = 300.0
    """The job cancels itself (`scancel`) when the Dagster run worker that waits for it has not touched its
    heartbeat file for this many seconds (the worker died: SIGKILL, the OOM killer), so nothing trains on
    unwatched. Keep it well above the shared filesystem's attribute cache time (NFS: acregmax, 60 s)."""
    rdzv_port: int = 29500
    """The c10d rendezvous port on the job's first node."""


@dataclass
class LaunchConfig:
    """How the `training_run` asset starts the trainer: torchrun, through Dagster Pipes. Not part of any
    code version: where and how the trainer runs does not change what it computes."""

    backend: str = "local"
    """`local`: torchrun as a subprocess of the Dagster run; `slurm`: an `sbatch` job (the `slurm` section),
    Pipes through files in the run directory, which must be on a filesystem every node sees."""
    nproc_per_node: int = 1
    """Processes per node: one per GPU on CUDA; CPU processes (gloo) otherwise."""
    torchrun_args: list[str] = field(default_factory=list)
    """Extra torchrun arguments. Local: for several nodes, e.g. [--nnodes=4, --node-rank=0, --master-addr=head,
    --master-port=29400] for the asset's node (static rendezvous keeps it global rank 0, the one that
    opens Pipes; docs/deploy.md); without them torchrun runs --standalone. Slurm: added to the generated
    rendezvous arguments, e.g. [--max-restarts=3]."""
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    @property
    def world_size(self) -> int:
        """Processes the `training_run` asset starts: nproc_per_node x the nodes (slurm.nodes, or torchrun's
        --nnodes: 1 when absent or an elastic range such as 1:4, whose size is only known at rendezvous)."""
        if self.backend == "slurm":
            return self.nproc_per_node * self.slurm.nodes
        nnodes, args = 1, self.torchrun_args
        for i, arg in enumerate(args):
            value = arg.split("=", 1)[1] if arg.startswith("--nnodes=") else (
                args[i + 1] if arg == "--nnodes" and i + 1 < len(args) else None)
            if value is not None and value.isdigit():
                nnodes = int(value)
        return self.nproc_per_node * nnodes


@dataclass
class EvalsConfig:
    """Scoring every checkpoint's Hugging Face export with the Eleuther lm-eval harness (evals/)."""

    tasks: list[str] = field(default_factory=lambda: ["hellaswag"])
    """lm-eval task names, each optionally `name:K` for K few-shot examples (default: the task's
    own), e.g. [hellaswag, arc_easy, arc_challenge:25, piqa, winogrande:5, lambada_openai, mmlu:5]."""
    limit: int | None = None
    """Score only the first N items of each task (None = all). Reports say when it is set."""
    batch_size: int = 16
    """lm-eval batch size for the `hf` model."""
    device: str = "auto"
    """`auto`: never a GPU a training run on this host is using. The CPU without a GPU; `cuda:0` while no
    run of this data dir trains here; else the first GPU the launch leaves free (cuda:N, N =
    launch.nproc_per_node, as torchrun gives rank r GPU r); else the CPU, not a wait for training to
    end: a report while the run trains, bounded by `limit`, and the trainer's GPU memory never
    touched (evals/device.py says why). `cpu`, `cuda`, `cuda:1`, `mps`: used as given. Reports and the
    Dagster run record the device and why."""
    local_data: list[str] = field(default_factory=list)
    """`task=PATH` pairs: run the harness's own task definition on a local jsonl instead of the
    Hub's dataset (offline), e.g. [hellaswag=data/hellaswag_val.jsonl]."""
    baselines_file: str | None = None
    """JSON of reference figures shown next to each report's own, in the shape of evals/published.py's
    `published_baselines()`; None = that table (published GPT-2 / GPT-3 figures for 124M-1558M)."""
    reference_reports: list[str] = field(default_factory=list)
    """Report folders written by `gpt2train eval SOURCE --out DIR` (e.g. OpenAI's GPT-2): each report
    shows their scores beside its own, per task, only where they were measured on the same data and
    settings (else a line naming what differs); evals/reference.py. Relative to the YAML file."""


@dataclass
class Config:
    """The whole pipeline's configuration: one section per stage."""

    data_dir: str = "data"
    """Where every artifact is written: `corpus/`, `shards/`, ... (a relative path: see load_config)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    evals: EvalsConfig = field(default_factory=EvalsConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base_dir: str | Path | None = None) -> Config:
    """Read a YAML file or a shipped preset (default: `tiny`) and apply `section.key=value` overrides.

    `base_dir` is what a shipped preset's relative paths (and `--set`'s) are resolved against:
    the working directory unless given (the Dagster code location is given the CLI's, so a run
    worker started elsewhere writes where the command that launched it would)."""
    name = path or "tiny"
    path = preset_path(name)
    if not path.is_file():
        shipped = ", ".join(shipped_presets())
        if path.parent == CONFIG_DIR:
            raise ConfigError(f"--config {name}: no such preset and no such file; shipped presets: {shipped} "
                              f"(or give a YAML file's path)")
        raise ConfigError(f"config file {path} not found; give a YAML path or a shipped preset ({shipped})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    cfg = _build(Config, raw, where=str(path))
    cwd = Path(base_dir).resolve() if base_dir else Path.cwd()
    resolve_paths(cfg, base=cwd if is_shipped_preset(path) else path.resolve().parent)
    for item in overrides or []:
        apply_override(cfg, item, cwd=cwd)
    validate_config(cfg, where=str(path), explicit={item.split("=", 1)[0].strip() for item in overrides or []})
    return cfg


def apply_override(cfg: Config, item: str, cwd: Path | None = None) -> None:
    """Apply one `section.key=value` override (value parsed as YAML: `1000`, `null`, `[a, b]`);
    a relative path is resolved against `cwd` (default: the working directory)."""
    cwd = cwd or Path.cwd()
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. shards.shard_size=1000000")
    dotted, text = item.split("=", 1)
    parts = dotted.strip().split(".")
    obj: Any = cfg
    for i, part in enumerate(parts):
        names = {f.name: f for f in dataclasses.fields(obj)}
        if part not in names:
            where = ".".join(parts[:i]) or "the top level"
            raise ConfigError(f"--set {dotted}: unknown key {part!r} in {where}; known: {', '.join(names)}")
        f = names[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(_field_type(type(obj), part)):
                raise ConfigError(f"--set {dotted}: is a section; set one of its keys, e.g. {dotted}.<key>=...")
            ftype = _field_type(type(obj), part)
            value = _parse_override(ftype, text, where=f"--set {dotted}")
            value = _check(ftype, value, where=f"--set {dotted}")
            setattr(obj, f.name, resolve_field(tuple(parts), value, cwd, where=f"--set {dotted}"))
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"--set {dotted}: {'.'.join(parts[: i + 1])} is a value, not a section")


def _parse_override(ftype: Any, text: str, where: str) -> Any:
    """A string field takes the text as it is (a glob `*.jsonl`, a revision `0123456`, a file
    `2024` stay strings); anything else is parsed as YAML (`1000`, `true`, `null`, `[a, b]`; `1e-4`: _check)."""
    optional = type(None) in typing.get_args(ftype)
    if text.strip() in ("", "null", "~", "None"):
        return None if optional else text
    if ftype is str or (optional and str in typing.get_args(ftype)):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: cannot parse {text!r} ({e.problem if hasattr(e, 'problem') else e})") from e


def config_to_dict(obj: Any) -> Any:
    """A JSON-ready dict of a config (or one section), for lineage sidecars and metadata."""
    return dataclasses.asdict(obj)


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _build(cls: type, raw: dict, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping for section {cls.__name__}, got {raw!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in raw.items():
        ftype = _field_type(cls, name)
        if dataclasses.is_dataclass(ftype):
            kwargs[name] = _build(ftype, value or {}, where=f"{where}: {name}")
        else:
            kwargs[name] = _check(ftype, value, where=f"{where}: {name}")
    return cls(**kwargs)


def _check(ftype: Any, value: Any, where: str) -> Any:
    """Return `value` if it fits `ftype` (int widened to float), else raise ConfigError."""
    origin = typing.get_origin(ftype)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(ftype)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(arg, value, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(ftype)}")
    if origin is list:
        (item,) = typing.get_args(ftype)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check(item, v, where) for v in value]
    if ftype is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # PyYAML (YAML 1.1) reads `6e-4` as a string; llm.c's atof and YAML 1.2 read a number, as a float field does.
    if ftype is float and isinstance(value, str) and FLOAT_TEXT.fullmatch(value.strip()):
        return float(value)
    if ftype is int and isinstance(value, bool) or not isinstance(value, ftype):
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(ftype)}{int_hint(ftype, value)}")
    return value


def _type_name(ftype: Any) -> str:
    return getattr(ftype, "__name__", str(ftype).replace("typing.", ""))
