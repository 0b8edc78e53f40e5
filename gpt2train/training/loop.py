"""`train(cfg)`: llm.c's training loop, as named steps (after torchtitan's train.py).

    set_up        check every input, build the loaders, the model and the optimizer
    take_run_dir  one trainer per run directory (rank 0 holds its lock for the job)
    resume        from the newest complete checkpoint in `out_dir`, if any
    run_loop      train_step (gpt2train/training/step.py), metrics (and train.loggers: trackers.py),
                  evals (evals.py), checkpoints

Every step: `grad_accum` micro-batches of B x T per process, grad-norm clipping, the learning rate
of the schedule (schedule.py), one AdamW step. A checkpoint every `checkpoint_every` steps and at
the end, each evaluated before it is saved.

Exactness: the data position, RNG states, weights and optimizer state are all in the checkpoint,
so on CPU N steps + resume + N steps equal 2N steps straight, bit for bit (tests/test_train.py).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from gpt2train import __version__, layout
from gpt2train.config import Config, TrainConfig, config_to_dict
from gpt2train.data.loader import ShardLoader
from gpt2train.data.shards import verify_shard_hashes
from gpt2train.errors import ConfigError, TrainingDiverged
from gpt2train.failpoints import failpoint
from gpt2train.kernels import resolve_kernels
from gpt2train.kernels.compile_check import ModelShape, check_kernels_compile, mode_for
from gpt2train.lineage.records import data_dir_field, git_commit, recorded_path
from gpt2train.locks import writer_lock
from gpt2train.model import GPT, GPTConfig
from gpt2train.layout import STEP_DIR, step_dir
from gpt2train.training.checkpoint import (
    latest_checkpoint, load_checkpoint, prune_checkpoints, restore_rng, save_checkpoint,
)
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
from gpt2train.training.step import UpdateGuard, memory_mb, peak_memory_mb, train_step
from gpt2train.training.trackers import TrackedMetricsLog, Trackers, start_trackers
from gpt2train.weights import load_state_dict

log = logging.getLogger(__name__)
# The logger every training module logs under: main.log and Dagster Pipes attach their handlers here.
TRAINING_LOG = "gpt2train.training"


@dataclass
class Trainer:
    """Everything the loop needs, as `set_up` builds it; `resume` moves `start_step` on."""

    cfg: Config
    d: Dist
    device: str
    device_type: str
    identity: RunIdentity
    home: Path                  # <data_dir>/runs/<run tag>: the run's own directory
    out_dir: Path               # where it trains: `home`, or train.out_dir when set
    train_glob: str
    val_glob: str
    train_loader: ShardLoader
    val_loader: ShardLoader | None
    grad_accum: int
    max_steps: int
    kernels: str                # train.kernels resolved for this device: triton or torch
    model: GPT
    optimizer: torch.optim.Optimizer
    autocast: Callable[[], contextlib.AbstractContextManager]
    hellaswag: list | None
    guard: UpdateGuard
    start_step: int = 0
    loss: float = float("nan")  # the last step's; a resumed run that has nothing to train reports its checkpoint's
    resume_from: Path | None = None

    @property
    def t(self) -> TrainConfig:
        return self.cfg.train

    @property
    def ckpt_root(self) -> Path:
        return layout.checkpoints_dir(self.out_dir)

    def checkpoint_due(self, step: int) -> bool:
        return bool(self.t.checkpoint_every and step % self.t.checkpoint_every == 0) or step == self.max_steps


def train(cfg: Config, on_checkpoint: Callable[[Path], None] | None = None) -> dict:
    """Run (or resume) the configured training; returns a summary of the final step.
    `on_checkpoint(path)` is called on rank 0 after each complete checkpoint (e.g. to report it)."""
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    d = init_distributed(device_type)
    device = f"cuda:{d.local_rank}" if device_type == "cuda" else "cpu"
    try:
        with contextlib.ExitStack() as held:  # the run directory's lock and main.log, once taken
            tr = set_up(cfg, d, device, device_type)
            take_run_dir(tr, held)
            resume(tr)
            if d.world == 1:  # SIGTERM / SIGINT: an error that says where the run resumes from (failure.py)
                held.enter_context(stop_on_signals(lambda name: stopped_message(name, tr.out_dir)))
            return run_loop(tr, on_checkpoint, held)
    finally:
        destroy_distributed(d)


def set_up(cfg: Config, d: Dist, device: str, device_type: str) -> Trainer:
    """Every input checked (model shape, batch sizes, shards, HellaSwag, kernels) before the run
    directory is touched; then the model, seeded, and its optimizer."""
    t = cfg.train
    try:
        model_cfg = GPTConfig.from_descriptor(cfg.model.descriptor, cfg.model.block_size)
    except ValueError as e:
        raise ConfigError(f"model.descriptor: {e}") from e
    tokens_per_micro = t.batch_size * t.seq_len * d.world
    if t.total_batch_tokens % tokens_per_micro:
        raise ConfigError(f"train.total_batch_tokens={t.total_batch_tokens} is not divisible by "
                          f"B*T*world = {t.batch_size}*{t.seq_len}*{d.world} = {tokens_per_micro}")
    grad_accum = t.total_batch_tokens // tokens_per_micro
    train_glob, val_glob = shard_globs(cfg)
    identity = run_identity(cfg)
    home = layout.run_dir(cfg.data_dir, identity.tag)  # run_dir(cfg), without computing the identity again
    train_loader = ShardLoader(train_glob, t.batch_size, t.seq_len, d.rank, d.world, shuffle=t.shuffle, seed=t.seed,
                               accum=grad_accum)
    val_loader = ShardLoader(val_glob, t.batch_size, t.seq_len, d.rank, d.world, shuffle=False) if t.val_every else None
    if t.verify_shards:  # before any batch is read: a corrupted shard stops the run here, named
        for pattern in (train_glob, val_glob) if val_loader else (train_glob,):
            verify_shard_hashes(pattern, progress=d.is_main)
    hellaswag = load_in_loop_hellaswag(t, cfg.data_dir, d)

    torch.manual_seed(t.seed)
    set_matmul_precision(t, device_type)
    try:
        kernels = resolve_kernels(t.kernels, device_type)
    except ValueError as e:
        raise ConfigError(f"train.kernels: {e}") from e
    if kernels == "triton" and device_type == "cuda":
        check_triton_kernels(cfg, model_cfg, d)
    model = build_model(model_cfg, t, kernels, device)
    if t.init_from:  # its shape was checked with the config (config_checks.py)
        model.load_state_dict(load_state_dict(t.init_from))
    return Trainer(
        cfg=cfg, d=d, device=device, device_type=device_type, identity=identity, home=home,
        out_dir=Path(t.out_dir) if t.out_dir else home, train_glob=train_glob, val_glob=val_glob,
        train_loader=train_loader, val_loader=val_loader, grad_accum=grad_accum,
        max_steps=t.max_steps if t.max_steps > 0 else max(1, train_loader.batches_per_epoch),
        kernels=kernels, model=model, optimizer=build_optimizer(model, t, device_type, d.world),
        autocast=autocast_for(t, device_type), hellaswag=hellaswag,
        guard=UpdateGuard(skip_loss_z=t.skip_loss_z, skip_grad_z=t.skip_grad_z))


def take_run_dir(tr: Trainer, held: contextlib.ExitStack) -> None:
    """From here on the run directory is read for resuming and then written. One trainer per run
    directory: a second one (another pipeline run, a CLI launch beside a UI run) is refused here."""
    if tr.d.is_main:  # rank 0 holds the lock for the job
        held.enter_context(writer_lock(tr.out_dir, "training run"))
        check_run_dir(tr.out_dir, tr.identity.tag, tr.home)
    tr.d.barrier()  # no rank reads the run directory before rank 0 holds it


def resume(tr: Trainer) -> None:
    """Weights, optimizer, loader position, RNG and update guard from the newest complete
    checkpoint in the run directory (train.resume), if there is one."""
    d = tr.d
    tr.resume_from = latest_checkpoint(tr.ckpt_root) if tr.t.resume else None
    if tr.resume_from is None:
        return
    saved_world = load_checkpoint(tr.resume_from, rank=0, weights_only=True)["state"].get("world", 1)
    if saved_world != d.world and tr.t.zero_stage == 1:
        raise ConfigError(f"{tr.resume_from} holds ZeRO-1 optimizer shards for {saved_world} ranks; resume with "
                          f"--nproc_per_node={saved_world} (re-sharding ZeRO-1 state is not supported)")
    # Another world size: without ZeRO every rank's optimizer state is the same full copy and
    # the loader position counts global batches, so every rank starts from rank 0's files.
    ck = load_checkpoint(tr.resume_from, d.rank if saved_world == d.world else 0)
    tr.model.load_state_dict(ck["model"])
    load_optimizer_shard_state(tr.optimizer, ck["optimizer"])
    tr.train_loader.load_state_dict(ck["loader"])
    restore_rng(ck["rng"])
    state = ck["state"]
    tr.start_step = state["step"]
    tr.guard.load_state_dict(state)
    if state.get("kernels", tr.kernels) != tr.kernels and d.is_main:  # train.kernels=auto on another machine
        log.warning("%s was trained with the %s kernels; this process runs the %s ones (train.kernels=%s): the "
                    "same model and math, a different rounding from here on", tr.resume_from,
                    state["kernels"], tr.kernels, tr.t.kernels)
    tr.loss = state.get("loss", tr.loss)  # the summary's, if nothing is left to train


def run_loop(tr: Trainer, on_checkpoint: Callable[[Path], None] | None, held: contextlib.ExitStack) -> dict:
    """Steps `start_step + 1 .. max_steps`, each with its metrics line, its evals and its
    checkpoint when due; returns the summary `train` returns."""
    t, d, model = tr.t, tr.d, tr.model
    ddp_model = apply_ddp(apply_compile(model) if t.compile else model, d.world)
    next_batch = tr.train_loader.next_batch
    if t.overfit_batch:  # one micro-batch, over and over; the loader's position stays where it was
        position = tr.train_loader.state_dict()
        batch = tr.train_loader.next_batch()
        tr.train_loader.load_state_dict(position)
        next_batch = lambda: batch  # noqa: E731
    device_name = torch.cuda.get_device_name() if tr.device_type == "cuda" else None
    peak_flops = peak_bf16_flops(device_name)
    lineage = run_lineage(tr)
    trackers = Trackers()  # train.loggers: rank 0's only
    if d.is_main:
        tr.out_dir.mkdir(parents=True, exist_ok=True)
        held.enter_context(file_log(tr.out_dir / layout.MAIN_LOG))
        log_start(tr, device_name, peak_flops)
        trackers = held.enter_context(start_trackers(tr.cfg, tr.out_dir, tr.start_step))
    # Every record (steps, val loss, HellaSwag) also goes to the trackers: the same numbers at the same step.
    metrics = TrackedMetricsLog(tr.out_dir / layout.METRICS, writer=d.is_main, trackers=trackers)
    metrics.start(tr.start_step)
    evals = InLoopEvals(t, model, ddp_model, tr.val_loader, tr.hellaswag, tr.autocast, tr.checkpoint_due, metrics,
                        plot=tr.out_dir / layout.TRAINING_PLOT,
                        plot_title=f"{tr.cfg.model.descriptor} · {tr.out_dir.name}",
                        max_steps=tr.max_steps, device=tr.device, d=d)

    if d.is_main and tr.start_step >= tr.max_steps:
        log.info("nothing to train: %s already holds the final step %d", tr.resume_from, tr.start_step)
    if tr.start_step == 0:
        evals(0)  # the untrained model (a resumed run logged its start step's before saving it)
    flops_per_token = model.flops_per_token(t.seq_len)
    recent_ms: collections.deque[float] = collections.deque(maxlen=20)  # for the ETA: the pace of late
    started = time.perf_counter()
    for step in range(tr.start_step, tr.max_steps):
        done = step + 1
        lr = learning_rate(step, t, tr.max_steps)
        r = train_step(model, ddp_model, tr.optimizer, next_batch, tr.grad_accum, tr.autocast, lr, t.grad_clip,
                       tr.guard, done, tr.device, d)
        tr.loss = r.loss
        tok_s = t.total_batch_tokens / (r.ms / 1000)
        # MFU per GPU against its dense bf16 peak (gpt2train/training/mfu.py); omitted where unknown (CPU).
        mfu = flops_per_token * tok_s / (peak_flops * d.world) if peak_flops else None
        metrics.write({"step": done, "loss": r.loss, "norm": r.norm, "lr": lr, "skipped": r.skipped,
                       **({"nonfinite": True} if r.nonfinite else {}), "ms": r.ms, "tok_s": tok_s,
                       "mem_mb": memory_mb(tr.device_type), **({"mfu": mfu} if mfu is not None else {})})
        recent_ms.append(r.ms)
        if d.is_main:
            mfu_text = f" | MFU {100 * mfu:.1f}%" if mfu is not None else ""
            eta = duration(sum(recent_ms) / len(recent_ms) / 1000 * (tr.max_steps - done))
            log.info("step %4d/%d | loss %.6f | norm %.4f | lr %.2e | %.1f ms%s | %.0f tok/s | ETA %s",
                     done, tr.max_steps, r.loss, r.norm, lr, r.ms, mfu_text, tok_s, eta)

        failpoint("train.step_done")
        in_a_row, limit = tr.guard.nonfinite_in_a_row, t.max_nonfinite_steps
        if r.nonfinite and limit and in_a_row >= limit:
            raise TrainingDiverged(diverged_message(done, in_a_row, limit, tr.ckpt_root))
        val_loss = evals(done)
        if d.is_main and t.sample_every and (done % t.sample_every == 0 or done == tr.max_steps):
            log.info("sample at step %d: %r", done, sample_text(model, t.sample_tokens, t.seed, tr.device))
        if tr.checkpoint_due(done):
            save(tr, done, val_loss, lineage, on_checkpoint)
    if d.is_main and tr.max_steps > tr.start_step:
        log_end(tr, time.perf_counter() - started)
    return {"steps": tr.max_steps, "final_loss": tr.loss, "skipped_updates": tr.guard.skipped,
            "out_dir": str(tr.out_dir), "kernels": tr.kernels, "peak_memory_mb": peak_memory_mb(tr.device_type)}


def save(tr: Trainer, step: int, val_loss: float | None, lineage: dict,
         on_checkpoint: Callable[[Path], None] | None) -> None:
    """The checkpoint of `step` (every rank writes its optimizer shard), pruned to train.keep_last
    and train.major_every, then handed to `on_checkpoint`."""
    d, main = tr.d, tr.d.is_main
    path = save_checkpoint(
        tr.ckpt_root, step, model_state=tr.model.state_dict() if main else None,
        optimizer_state=optimizer_shard_state(tr.optimizer), loader_state=tr.train_loader.state_dict(),
        # val_loss: of these very weights (the evals run at every checkpoint step), or None when
        # validation is off.
        state={"world": d.world, "kernels": tr.kernels, "loss": tr.loss, "val_loss": val_loss,
               "data_dir": data_dir_field(step_dir(tr.ckpt_root, step), tr.cfg.data_dir),
               "config": config_to_dict(tr.cfg), **tr.guard.state_dict(), "lineage": lineage} if main else None,
        rank=d.rank, barrier=d.barrier)
    if main:
        prune_checkpoints(tr.ckpt_root, tr.t.keep_last, tr.t.major_every)
        log.info("checkpoint %s", path)
        if on_checkpoint is not None:
            on_checkpoint(path)


def run_lineage(tr: Trainer) -> dict:
    """What every checkpoint of this run records it was made from."""
    return {"run_tag": tr.identity.tag, "shards_dir": recorded_path(Path(tr.train_glob).parent, tr.cfg.data_dir),
            "train_shards": shard_lineage(tr.train_glob),
            "val_shards": shard_lineage(tr.val_glob) if tr.val_loader else [],
            "code_version": tr.identity.code_version, "git_commit": git_commit(), "gpt2train_version": __version__}


def log_end(tr: Trainer, seconds: float) -> None:
    """One line at the end of a run: how much, how long, where it ended, where the checkpoints are."""
    trained = tr.max_steps - tr.start_step
    log.info("done: steps %d..%d (%s tokens) in %s; final train loss %.4f; checkpoints in %s", tr.start_step,
             tr.max_steps, f"{trained * tr.t.total_batch_tokens:,}", duration(seconds), tr.loss, tr.ckpt_root)


def duration(seconds: float) -> str:
    """`1h02m03s`, `4m05s`, `12s`."""
    s = int(round(seconds))
    h, m = s // 3600, s // 60 % 60
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else f"{m}m{s % 60:02d}s" if m else f"{s}s"


def log_start(tr: Trainer, device_name: str | None, peak_flops: float | None) -> None:
    t, d, on_cpu = tr.t, tr.d, tr.device_type != "cuda"
    log.info("model %s: %s parameters, %s FLOPs/token, %s kernels; B=%d T=%d world=%d grad_accum=%d, "
             "steps %d..%d%s", tr.cfg.model.descriptor, f"{tr.model.num_params():,}",
             f"{tr.model.flops_per_token(t.seq_len):,}",
             tr.kernels + (" (Triton interpreter)" if tr.kernels == "triton" and on_cpu else ""),
             t.batch_size, t.seq_len, d.world, tr.grad_accum, tr.start_step, tr.max_steps,
             f" (resumed from {tr.resume_from})" if tr.resume_from else "")
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
