"""`train(cfg)`: llm.c's training loop, as a Trainer that owns its parts (after torchtitan's Trainer).

    Trainer(cfg, ...)  check every input, build the loaders, the model, the optimizer and the checkpointer
    take_run_dir       one trainer per run directory (rank 0 holds its lock for the job)
    resume             the checkpointer (checkpointer.py) loads the newest complete checkpoint in `out_dir`, if any
    fit                the loop: train_step, metrics (and train.loggers: trackers.py), evals (evals.py),
                       checkpoints; a skipped update keeps the checkpoint before it (checkpointer.py)
    train_step         one update: micro-batches, all-reduce, clipping, the update guard (step.py), AdamW

Every step: `grad_accum` micro-batches of B x T per process, grad-norm clipping, the learning rate
of the schedule (schedule.py), one AdamW step. A checkpoint every `checkpoint_every` steps and at
the end, each evaluated before it is saved.

Exactness: the data position, RNG states, weights and optimizer state are all in the checkpoint
(TrainState), so on CPU N steps + resume + N steps equal 2N steps straight, bit for bit (tests/test_train.py).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from gpt2train import __version__, layout
from gpt2train.config import Config, TrainConfig
from gpt2train.data.loader import ShardLoader
from gpt2train.data.shards import ShardVerification, verify_shard_hashes
from gpt2train.errors import ConfigError, DataError, TrainingDiverged
from gpt2train.failpoints import failpoint
from gpt2train.kernels import resolve_kernels
from gpt2train.kernels.compile_check import ModelShape, check_kernels_compile, mode_for
from gpt2train.lineage.records import git_commit, recorded_path
from gpt2train.locks import writer_lock
from gpt2train.model import GPT, GPTConfig
from gpt2train.layout import STEP_DIR
from gpt2train.training.checkpoint import latest_checkpoint
from gpt2train.training.checkpointer import CheckpointManager
from gpt2train.training.distributed import Dist, destroy_distributed, init_distributed
from gpt2train.training.evals import InLoopEvals, load_in_loop_hellaswag, sample_text
from gpt2train.training.failure import stop_on_signals, stopped_message
from gpt2train.training.mfu import peak_bf16_flops, unknown_device_note
from gpt2train.training.parallelize import (
    apply_compile, apply_ddp, autocast_for, build_model, build_optimizer, load_optimizer_shard_state,
    optimizer_shard_state, set_matmul_precision,
)
from gpt2train.training.run_identity import RunIdentity, check_run_dir, run_identity, shard_globs, shard_lineage
from gpt2train.training.schedule import learning_rate
from gpt2train.training.step import StepResult, UpdateGuard, clip_gradients, memory_mb, peak_memory_mb
from gpt2train.training.trackers import TrackedMetricsLog, Trackers, start_trackers
from gpt2train.weights import load_state_dict

log = logging.getLogger(__name__)
# The logger every training module logs under: main.log and Dagster Pipes attach their handlers here.
TRAINING_LOG = "gpt2train.training"


@dataclass
class TrainState:
    """What a checkpoint holds of a run in progress and a resume puts back (checkpointer.py): the
    weights, this rank's optimizer state and loader position, the update guard, the step and its
    losses. Torch's RNG state is saved and restored beside them."""

    model: GPT
    optimizer: torch.optim.Optimizer
    loader: ShardLoader
    guard: UpdateGuard
    step: int = 0                  # updates done
    loss: float = float("nan")     # the last step's; a resumed run that has nothing to train reports its checkpoint's
    val_loss: float | None = None  # of the weights after `step`, when they were evaluated there

    def optimizer_state(self) -> dict:
        """This rank's optimizer state: under ZeRO-1 its own shard (a whole one would need every rank's)."""
        return optimizer_shard_state(self.optimizer)

    def load_optimizer_state(self, state: dict) -> None:
        load_optimizer_shard_state(self.optimizer, state)


@dataclass(frozen=True)
class TrainSummary:
    """What `train` returns (`gpt2train train` prints it as JSON): the run as its final step left it."""

    steps: int              # the final step: train.max_steps, or one epoch
    final_loss: float       # the last step's train loss (with nothing left to train, its checkpoint's)
    skipped_updates: int    # updates the guard skipped over the whole run, resumes included
    out_dir: str            # the run directory: checkpoints/, metrics.jsonl, main.log
    kernels: str            # the hot-path ops it ran: triton or torch
    peak_memory_mb: float   # the most this process held: CUDA allocator bytes on GPU, resident set on CPU


def train(cfg: Config, on_checkpoint: Callable[[Path], None] | None = None) -> TrainSummary:
    """Run (or resume) the configured training; returns a summary of the final step.
    `on_checkpoint(path)` is called on rank 0 after each complete checkpoint (e.g. to report it), and
    again when an instability marks it as the last before it (its state.json changed, its weights not)."""
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    d = init_distributed(device_type)
    device = f"cuda:{d.local_rank}" if device_type == "cuda" else "cpu"
    try:
        with contextlib.ExitStack() as held:  # the run directory's lock and main.log, once taken
            trainer = Trainer(cfg, d, device, device_type, on_checkpoint)
            trainer.take_run_dir(held)
            trainer.resume()
            trainer.shards_verified.record()  # every input checked, the run directory ours: the data dir may change
            if d.world == 1:  # SIGTERM / SIGINT: an error that says where the run resumes from (failure.py)
                held.enter_context(stop_on_signals(lambda name: stopped_message(name, trainer.out_dir)))
            return trainer.fit(held)
    finally:
        destroy_distributed(d)


def verify_shards_once(train_glob: str, val_glob: str | None, d: Dist) -> ShardVerification:
    """`train.verify_shards`: the job's shards hashed once per launch across its ranks, each rank a share of the
    bytes, and only the shards no verification record vouches for (gpt2train/data/shards.py: the token_shards
    checks, `gpt2train verify` or an earlier launch hashed them, and they have not changed since). Every rank
    gets every rank's verdict and raises the same error, naming the first changed shard. Returns this rank's
    findings, whose records `train` writes once the launch is under way."""
    found = verify_shard_hashes([train_glob, *([val_glob] if val_glob else [])], d.rank, d.world,
                                progress=d.is_main)
    problems = found.problems
    if d.world > 1:
        verdicts: list = [None] * d.world
        torch.distributed.all_gather_object(verdicts, problems)
        problems = [p for rank_problems in verdicts for p in rank_problems]
    if problems:
        raise DataError(problems[0] + (f" ({len(problems) - 1} more shard(s) changed too)" if len(problems) > 1
                                       else ""))
    return found


class Trainer:
    """The run's parts: its loaders, model, optimizer and update guard (`state`), their checkpointer,
    the evals' inputs; `fit` trains them, one `train_step` at a time."""

    def __init__(self, cfg: Config, d: Dist, device: str, device_type: str,
                 on_checkpoint: Callable[[Path], None] | None = None):
        """Every input checked (model shape, batch sizes, shards, HellaSwag, kernels) before the run
        directory is touched; then the model, seeded, its optimizer and the checkpointer."""
        t = cfg.train
        try:
            model_cfg = GPTConfig.from_descriptor(cfg.model.descriptor, cfg.model.block_size)
        except ValueError as e:
            raise ConfigError(f"model.descriptor: {e}") from e
        tokens_per_micro = t.batch_size * t.seq_len * d.world
        if t.total_batch_tokens % tokens_per_micro:
            raise ConfigError(f"train.total_batch_tokens={t.total_batch_tokens} is not divisible by "
                              f"B*T*world = {t.batch_size}*{t.seq_len}*{d.world} = {tokens_per_micro}")
        self.cfg, self.d, self.device, self.device_type = cfg, d, device, device_type
        self.grad_accum = t.total_batch_tokens // tokens_per_micro
        self.train_glob, self.val_glob = shard_globs(cfg)
        self.identity = run_identity(cfg)
        self.home = layout.run_dir(cfg.data_dir, self.identity.tag)  # <data_dir>/runs/<run tag>: the run's own
        self.out_dir = Path(t.out_dir) if t.out_dir else self.home   # where it trains
        train_loader = ShardLoader(self.train_glob, t.batch_size, t.seq_len, d.rank, d.world, shuffle=t.shuffle,
                                   seed=t.seed, accum=self.grad_accum)
        self.val_loader = ShardLoader(self.val_glob, t.batch_size, t.seq_len, d.rank, d.world,
                                      shuffle=False) if t.val_every else None
        # Before any batch is read: a corrupted shard stops the run here, named.
        self.shards_verified = verify_shards_once(self.train_glob, self.val_glob if self.val_loader else None, d) \
            if t.verify_shards else ShardVerification([], [])
        self.hellaswag = load_in_loop_hellaswag(t, cfg.data_dir, d)
        self.max_steps = t.max_steps if t.max_steps > 0 else max(1, train_loader.batches_per_epoch)

        torch.manual_seed(t.seed)
        set_matmul_precision(t, device_type)
        try:
            self.kernels = resolve_kernels(t.kernels, device_type)  # triton or torch, for this device
        except ValueError as e:
            raise ConfigError(f"train.kernels: {e}") from e
        if self.kernels == "triton" and device_type == "cuda":
            check_triton_kernels(cfg, model_cfg, d)
        model = build_model(model_cfg, t, self.kernels, device)
        if t.init_from:  # its shape was checked with the config (config_checks.py)
            model.load_state_dict(load_state_dict(t.init_from))
        self.autocast = autocast_for(t, device_type)
        self.state = TrainState(model, build_optimizer(model, t, device_type, d.world), train_loader,
                                UpdateGuard(skip_loss_z=t.skip_loss_z, skip_grad_z=t.skip_grad_z))
        lineage = run_lineage(cfg, self.identity, self.train_glob, self.val_glob if self.val_loader else None)
        self.checkpointer = CheckpointManager(layout.checkpoints_dir(self.out_dir), self.state, cfg, d, self.kernels,
                                              lineage, on_checkpoint)
        self.resumed_from: Path | None = None
        self.ddp_model: torch.nn.Module = model  # compiled and wrapped for DDP when `fit` starts, after the resume

    @property
    def t(self) -> TrainConfig:
        return self.cfg.train

    def checkpoint_due(self, step: int) -> bool:
        return bool(self.t.checkpoint_every and step % self.t.checkpoint_every == 0) or step == self.max_steps

    def take_run_dir(self, held: contextlib.ExitStack) -> None:
        """From here on the run directory is read for resuming and then written. One trainer per run
        directory: a second one (another pipeline run, a CLI launch beside a UI run) is refused here."""
        if self.d.is_main:  # rank 0 holds the lock for the job
            held.enter_context(writer_lock(self.out_dir, "training run"))
            check_run_dir(self.out_dir, self.identity.tag, self.home)
        self.d.barrier()  # no rank reads the run directory before rank 0 holds it

    def resume(self) -> None:
        """The state from the newest complete checkpoint in the run directory (train.resume), if any."""
        self.resumed_from = self.checkpointer.load()

    def fit(self, held: contextlib.ExitStack) -> TrainSummary:
        """Steps `state.step + 1 .. max_steps`, each with its metrics line, its evals and its checkpoint
        when due; returns the summary `train` returns."""
        t, d, s = self.t, self.d, self.state
        self.ddp_model = apply_ddp(apply_compile(s.model) if t.compile else s.model, d.world)
        batches = micro_batches(s.loader, t.overfit_batch)
        device_name = torch.cuda.get_device_name() if self.device_type == "cuda" else None
        peak_flops = peak_bf16_flops(device_name)
        metrics = self.open_metrics(held, device_name, peak_flops)
        evals = InLoopEvals(t, s.model, self.ddp_model, self.val_loader, self.hellaswag, self.autocast,
                            self.checkpoint_due, metrics, plot=self.out_dir / layout.TRAINING_PLOT,
                            plot_title=f"{self.cfg.model.descriptor} · {self.out_dir.name}",
                            max_steps=self.max_steps, device=self.device, d=d)

        if d.is_main and s.step >= self.max_steps:
            log.info("nothing to train: %s already holds the final step %d", self.resumed_from, s.step)
        if s.step == 0:
            evals(0)  # the untrained model (a resumed run logged its start step's before saving it)
        flops_per_token = s.model.flops_per_token(t.seq_len)
        recent_ms: collections.deque[float] = collections.deque(maxlen=20)  # for the ETA: the pace of late
        start_step, started = s.step, time.perf_counter()
        while s.step < self.max_steps:
            r = self.train_step(batches)
            done = s.step
            tok_s = t.total_batch_tokens / (r.ms / 1000)
            # MFU per GPU against its dense bf16 peak (gpt2train/training/mfu.py); omitted where unknown (CPU).
            mfu = flops_per_token * tok_s / (peak_flops * d.world) if peak_flops else None
            metrics.write({"step": done, "loss": r.loss, "norm": r.norm, "lr": r.lr, "skipped": r.skipped,
                           **({"nonfinite": True} if r.nonfinite else {}), "ms": r.ms, "tok_s": tok_s,
                           "mem_mb": memory_mb(self.device_type), **({"mfu": mfu} if mfu is not None else {})})
            recent_ms.append(r.ms)
            if d.is_main:
                mfu_text = f" | MFU {100 * mfu:.1f}%" if mfu is not None else ""
                eta = duration(sum(recent_ms) / len(recent_ms) / 1000 * (self.max_steps - done))
                log.info("step %4d/%d | loss %.6f | norm %.4f | lr %.2e | %.1f ms%s | %.0f tok/s | ETA %s",
                         done, self.max_steps, r.loss, r.norm, r.lr, r.ms, mfu_text, tok_s, eta)

            if r.skipped and d.is_main:  # an instability: the checkpoint before it is never pruned
                self.checkpointer.keep_before_instability(done, instability_reason(r, s.guard, t))
            failpoint("train.step_done")
            in_a_row, limit = s.guard.nonfinite_in_a_row, t.max_nonfinite_steps
            if r.nonfinite and limit and in_a_row >= limit:
                raise TrainingDiverged(diverged_message(done, in_a_row, limit, self.checkpointer.root))
            s.val_loss = evals(done)
            if d.is_main and t.sample_every and (done % t.sample_every == 0 or done == self.max_steps):
                log.info("sample at step %d: %r", done, sample_text(s.model, t.sample_tokens, t.seed, self.device))
            if self.checkpoint_due(done):
                self.checkpointer.save(done)
        if d.is_main and self.max_steps > start_step:
            log_end(self, start_step, time.perf_counter() - started)
        return TrainSummary(steps=self.max_steps, final_loss=s.loss, skipped_updates=s.guard.skipped,
                            out_dir=str(self.out_dir), kernels=self.kernels,
                            peak_memory_mb=peak_memory_mb(self.device_type))

    def open_metrics(self, held: contextlib.ExitStack, device_name: str | None,
                     peak_flops: float | None) -> TrackedMetricsLog:
        """metrics.jsonl from the start step on; on rank 0 also main.log, the start lines and the trackers."""
        trackers = Trackers()  # train.loggers: rank 0's only
        if self.d.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            held.enter_context(file_log(self.out_dir / layout.MAIN_LOG))
            log_start(self, device_name, peak_flops)
            trackers = held.enter_context(start_trackers(self.cfg, self.out_dir, self.state.step))
        # Every record (steps, val loss, HellaSwag) also goes to the trackers: the same numbers at the same step.
        metrics = TrackedMetricsLog(self.out_dir / layout.METRICS, writer=self.d.is_main, trackers=trackers)
        metrics.start(self.state.step)
        return metrics

    def train_step(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> StepResult:
        """The next update (`state.step` + 1): forward and backward over the next `grad_accum` micro-batches
        of `batches`, then AdamW at the schedule's learning rate unless the update guard skips it."""
        t, d, s, accum = self.t, self.d, self.state, self.grad_accum
        lr = learning_rate(s.step, t, self.max_steps)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(accum):
            x, y = next(batches)
            # Gradients are all-reduced once per step, on the last micro-batch.
            sync = contextlib.nullcontext() if (d.world == 1 or micro == accum - 1) else self.ddp_model.no_sync()
            with sync:
                with self.autocast():
                    _, loss = self.ddp_model(x.to(self.device), y.to(self.device))
                (loss / accum).backward()
            loss_sum += loss.detach()
        loss_value = (d.all_reduce(loss_sum) / (accum * d.world)).item()
        norm, clip_coef = clip_gradients(s.model.parameters(), t.grad_clip)
        skip, nonfinite = s.guard.skips(s.step + 1, loss_value, norm, clip_coef, lr)
        if not skip:
            for group in s.optimizer.param_groups:
                group["lr"] = lr
            s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()  # the optimizer step is queued, not done: time it too
        ms = (time.perf_counter() - t0) * 1000
        s.step, s.loss = s.step + 1, loss_value
        return StepResult(loss_value, norm, lr, skip, nonfinite, ms)


def instability_reason(r: StepResult, guard: UpdateGuard, t: TrainConfig) -> str:
    """Why the guard skipped update `r`, in words for the log and the checkpoint it keeps: the values that
    were not finite, else which z-score passed its limit (llm.c's -sl / -sg)."""
    if r.nonfinite:
        bad = [f"{name} {v}" for name, v in (("loss", r.loss), ("grad norm", r.norm), ("lr", r.lr))
               if not math.isfinite(v)]
        return f"{', '.join(bad) or 'clip coefficient'}: not finite"
    over = [f"{what} z {z:.1f} > train.{limit_name}={limit:g}"
            for what, z, limit_name, limit in (("loss", guard.loss_outliers.last_z, "skip_loss_z", t.skip_loss_z),
                                               ("grad norm", guard.norm_outliers.last_z, "skip_grad_z", t.skip_grad_z))
            if limit > 0 and z > limit]
    return ", ".join(over) or "update skipped"


def micro_batches(loader: ShardLoader, overfit: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training micro-batches, without end: the loader's, each read when the step asks for it, or
    with train.overfit_batch its next one over and over, the loader's position left where it was."""
    if not overfit:
        return (loader.next_batch() for _ in itertools.count())
    position = loader.state_dict()
    batch = loader.next_batch()
    loader.load_state_dict(position)
    return itertools.repeat(batch)


def run_lineage(cfg: Config, identity: RunIdentity, train_glob: str, val_glob: str | None) -> dict:
    """What every checkpoint of this run records it was made from (`val_glob`: None without validation)."""
    return {"run_tag": identity.tag, "shards_dir": recorded_path(Path(train_glob).parent, cfg.data_dir),
            "train_shards": shard_lineage(train_glob), "val_shards": shard_lineage(val_glob) if val_glob else [],
            "code_version": identity.code_version, "git_commit": git_commit(), "gpt2train_version": __version__}


def log_end(tr: Trainer, start_step: int, seconds: float) -> None:
    """One line at the end of a run: how much, how long, where it ended, where the checkpoints are."""
    trained = tr.max_steps - start_step
    log.info("done: steps %d..%d (%s tokens) in %s; final train loss %.4f; checkpoints in %s", start_step,
             tr.max_steps, f"{trained * tr.t.total_batch_tokens:,}", duration(seconds), tr.state.loss,
             tr.checkpointer.root)


def duration(seconds: float) -> str:
    """`1h02m03s`, `4m05s`, `12s`."""
    s = int(round(seconds))
    h, m = s // 3600, s // 60 % 60
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else f"{m}m{s % 60:02d}s" if m else f"{s}s"


def log_start(tr: Trainer, device_name: str | None, peak_flops: float | None) -> None:
    t, d, on_cpu = tr.t, tr.d, tr.device_type != "cuda"
    log.info("model %s: %s parameters, %s FLOPs/token, %s kernels; B=%d T=%d world=%d grad_accum=%d, "
             "steps %d..%d%s", tr.cfg.model.descriptor, f"{tr.state.model.num_params():,}",
             f"{tr.state.model.flops_per_token(t.seq_len):,}",
             tr.kernels + (" (Triton interpreter)" if tr.kernels == "triton" and on_cpu else ""),
             t.batch_size, t.seq_len, d.world, tr.grad_accum, tr.state.step, tr.max_steps,
             f" (resumed from {tr.resumed_from})" if tr.resumed_from else "")
    if device_name and peak_flops is None:
        log.info(unknown_device_note(device_name))
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
    if restarts:
        log.info("torchrun restart %d of this job (--max-restarts): every rank was started again", restarts)


def check_triton_kernels(cfg: Config, model_cfg: GPTConfig, d: Dist) -> None:
    """Before the first step on a GPU: every Triton kernel compiles for it at this run's shapes and
    precision (gpt2train/kernels/compile_check.py), or the run stops here with one line naming the
    kernel and the architecture, not with a Triton traceback in the middle of a step."""
    t = cfg.train
    # Triton specializes on B * T only through its divisibility by 16, which B = 1 keeps when T is a
    # multiple of 16: the same builds, without the host work of full-size tensors on every rank.
    B = 1 if t.seq_len % 16 == 0 else t.batch_size
    shape = ModelShape(cfg.model.descriptor, C=model_cfg.n_embd, H=model_cfg.n_head, B=B, T=t.seq_len,
                       V=model_cfg.vocab_size, VP=model_cfg.padded_vocab_size)
    mode = mode_for(t.bf16, t.master_weights, t.tf32)
    t0 = time.perf_counter()
    # One rank per node builds (into triton's cache), then the others find every build there.
    if d.local_rank == 0:
        arch = check_kernels_compile(shape, mode, choice=t.kernels)
    d.barrier()
    if d.local_rank != 0:
        arch = check_kernels_compile(shape, mode, choice=t.kernels)
    if d.is_main:
        log.info("Triton kernels compile for sm_%d at T=%d, %s (%.1f s; triton caches the builds)", arch,
                 t.seq_len, mode.name, time.perf_counter() - t0)


def diverged_message(step: int, in_a_row: int, limit: int, ckpt_root: Path) -> str:
    last_good = latest_checkpoint(ckpt_root)
    where = (f"the last good checkpoint is {last_good} (step {int(STEP_DIR.match(last_good.name)[1])}); the run resumes "
             f"from it when started again" if last_good else "no checkpoint was written yet")
    return (f"training stopped at step {step}: the loss, gradient norm, clip coefficient or learning rate was NaN/Inf "
            f"for {in_a_row} steps in a row "
            f"(steps {step - in_a_row + 1}..{step}; train.max_nonfinite_steps={limit}); none of them updated the "
            f"weights. {where}. Lower train.learning_rate or raise train.warmup_steps, or check the data; "
            f"train.max_nonfinite_steps=0 keeps skipping instead of stopping")


@contextlib.contextmanager
def file_log(path: Path):
    """The training log lines, also into `path` (the run's main.log), while the run lasts."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger = logging.getLogger(TRAINING_LOG)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
