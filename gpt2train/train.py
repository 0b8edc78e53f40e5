"""The GPT-2 training loop: llm.c's recipe in PyTorch, one process or many under torchrun.

    gpt2train train --config tiny                                  # one process
    torchrun --nproc_per_node=2 -m gpt2train.train --config tiny   # DDP (gloo on CPU, NCCL on GPU)

Every step: `grad_accum` micro-batches (B x T per process; the gradient all-reduce only on
the last one), grad-norm clipping, the learning rate of the schedule, one AdamW step.
As llm.c, "step s" is the model after s updates: validation loss at step 0, every `val_every`
steps and at the last one; in-loop HellaSwag at the same steps but 0; a checkpoint every
`checkpoint_every` steps and at the end. Every checkpoint's weights are evaluated before it is
saved, so the val loss it records is its own. On start it resumes from the newest complete
checkpoint in `out_dir`.

Exactness: the data position, RNG states, weights and optimizer state are all in the
checkpoint, so on CPU N steps + resume + N steps equal 2N steps straight, bit for bit
(tests/test_train.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from gpt2train import __version__
from gpt2train.training.checkpoint import (
    STEP_DIR, latest_checkpoint, load_checkpoint, prune_checkpoints, restore_rng, save_checkpoint, step_dir,
)
from gpt2train.config import KERNEL_CHOICES, Config, TrainConfig, config_to_dict, load_config
from gpt2train.data.loader import ShardLoader
from gpt2train.errors import ConfigError, Gpt2TrainError, TrainingDiverged
from gpt2train.failpoints import failpoint
from gpt2train.fileio import atomic_output, disk_full_error, is_disk_full
from gpt2train.training.hellaswag import load_hellaswag, local_hellaswag_file, score_hellaswag
from gpt2train.kernels import resolve_kernels
from gpt2train.kernels.compile_check import ModelShape, check_kernels_compile, mode_for
from gpt2train.lineage.records import data_dir_field, git_commit, recorded_path
from gpt2train.training.llmc import llmc_args_to_overrides
from gpt2train.locks import writer_lock
from gpt2train.training.mfu import peak_bf16_flops, unknown_device_note
from gpt2train.model import GPT, GPTConfig
from gpt2train.training.outliers import OutlierDetector
from gpt2train.training.parallelize import (
    apply_compile, apply_ddp, apply_recompute, build_optimizer, load_optimizer_shard_state, optimizer_shard_state,
)
from gpt2train.training.plots import plot_training
from gpt2train.training.run_identity import check_run_dir, run_identity, runs_root, shard_globs, shard_lineage
from gpt2train.training.runs import read_metrics_file
from gpt2train.data.shards import verify_shard_hashes

log = logging.getLogger("gpt2train.train")

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_distributed(device_type: str) -> Dist:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; without them this is a single process."""
    if "RANK" not in os.environ:
        return Dist()
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    d = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device_type == "cuda":
        torch.cuda.set_device(d.local_rank)
    return d


def learning_rate(step: int, t: TrainConfig, max_steps: int) -> float:
    """llm.c's schedules: linear warmup to the peak, then cosine / linear / constant / wsd decay
    to `final_lr_frac` of the peak (wsd: constant, then linear decay over the last 20%)."""
    peak, final = t.learning_rate, t.learning_rate * t.final_lr_frac
    if step < t.warmup_steps:
        return peak * (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant":
        return peak
    progress = (step - t.warmup_steps) / max(1, max_steps - t.warmup_steps)
    if t.lr_schedule == "cosine":
        return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if t.lr_schedule == "linear":
        return peak - (peak - final) * progress
    decay_start = 0.8  # wsd
    return peak if progress < decay_start else peak - (peak - final) * (progress - decay_start) / (1 - decay_start)


def set_matmul_precision(t: TrainConfig, device_type: str) -> None:
    """TF32 for fp32 matmuls on CUDA (train.tf32, llm.c's -f)."""
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = t.tf32


def build_model(model_cfg: GPTConfig, t: TrainConfig, kernels: str, device: str) -> GPT:
    """The model as the trainer trains it: GPT-2's seeded init, the precision of its weights (fp32
    master weights, or with `master_weights=false` on CUDA the weights themselves in bf16, llm.c's
    -w 0), on `device`, with activation recompute (-r) applied. bench/train.py builds the same."""
    model = GPT(model_cfg, kernels=kernels).init_weights(t.seed)
    if device.startswith("cuda") and t.bf16 and not t.master_weights:
        model.to(torch.bfloat16)
    model.to(device)
    apply_recompute(model, t.recompute)
    return model


def autocast_for(t: TrainConfig, device_type: str) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast on CUDA (train.bf16); fp32 elsewhere."""
    if device_type == "cuda" and t.bf16:
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: ShardLoader, batches: int, device: str, d: Dist) -> float:
    model.eval()
    loader.reset()
    total = torch.zeros((), device=device)
    for _ in range(batches):
        x, y = loader.next_batch()
        total += model(x.to(device), y.to(device))[1]
    if d.world > 1:
        dist.all_reduce(total)
    model.train()
    return (total / (batches * d.world)).item()


def train(cfg: Config, on_checkpoint: Callable[[Path], None] | None = None) -> dict:
    """Run (or resume) the configured training; returns a summary of the final step.
    `on_checkpoint(path)` is called on rank 0 after each complete checkpoint (e.g. to report it)."""
    t = cfg.train
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    d = init_distributed(device_type)
    device = f"cuda:{d.local_rank}" if device_type == "cuda" else "cpu"
    try:
        with contextlib.ExitStack() as held:  # the run directory's writer lock, once taken
            return _train(cfg, t, d, device, device_type, on_checkpoint, held)
    finally:
        if d.world > 1:
            dist.destroy_process_group()


def _train(cfg: Config, t: TrainConfig, d: Dist, device: str, device_type: str,
           on_checkpoint: Callable[[Path], None] | None, held: contextlib.ExitStack) -> dict:
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
    home = runs_root(cfg) / identity.tag  # run_dir(cfg), without computing the identity again
    out_dir = Path(t.out_dir) if t.out_dir else home
    ckpt_root = out_dir / "checkpoints"
    train_loader = ShardLoader(train_glob, t.batch_size, t.seq_len, d.rank, d.world, shuffle=t.shuffle, seed=t.seed,
                               accum=grad_accum)
    val_loader = ShardLoader(val_glob, t.batch_size, t.seq_len, d.rank, d.world, shuffle=False) if t.val_every else None
    max_steps = t.max_steps if t.max_steps > 0 else max(1, train_loader.batches_per_epoch)
    if t.verify_shards:  # before any batch is read: a corrupted shard stops the run here, named
        for pattern in (train_glob, val_glob) if val_loader else (train_glob,):
            verify_shard_hashes(pattern, progress=d.is_main)
    hellaswag_every = t.val_every if t.hellaswag_every == -1 else t.hellaswag_every  # -1: llm.c's `-h 1`
    hellaswag = None
    if hellaswag_every > 0:
        if d.local_rank == 0:  # a URL is downloaded once per node, the other ranks read that copy
            local_hellaswag_file(t.hellaswag_file, cfg.data_dir)
        d.barrier()
        hellaswag = load_hellaswag(local_hellaswag_file(t.hellaswag_file, cfg.data_dir), t.hellaswag_items)

    torch.manual_seed(t.seed)
    set_matmul_precision(t, device_type)
    try:
        kernels = resolve_kernels(t.kernels, device_type)
    except ValueError as e:
        raise ConfigError(f"train.kernels: {e}") from e
    if kernels == "triton" and device_type == "cuda":
        check_triton_kernels(cfg, model_cfg, d)
    model = build_model(model_cfg, t, kernels, device)
    if t.init_from:
        try:
            model.load_state_dict(load_checkpoint(t.init_from, rank=0, weights_only=True)["model"])
        except RuntimeError as e:  # torch's size-mismatch report
            raise ConfigError(f"train.init_from={t.init_from} holds another model shape than model.descriptor="
                              f"{cfg.model.descriptor}: {str(e).splitlines()[-1].strip()}") from e
    autocast = autocast_for(t, device_type)
    optimizer = build_optimizer(model, t, device_type, d.world)
    loss_outliers, norm_outliers = OutlierDetector(), OutlierDetector()
    start_step, history, skipped, loss_value = 0, [], 0, float("nan")
    nonfinite_in_a_row = 0  # steps in a row whose loss or grad norm was NaN/Inf (their updates skipped)
    if d.is_main:
        # Every input is checked above; from here on the run directory is read for resuming and
        # then written. One trainer per run directory: a second one (another pipeline run, a CLI
        # launch beside a UI run) is refused here. Rank 0 holds the lock for the job.
        held.enter_context(writer_lock(out_dir, "training run"))
        check_run_dir(out_dir, identity.tag, home)
    d.barrier()  # no rank reads the run directory before rank 0 holds it
    resume_from = latest_checkpoint(ckpt_root) if t.resume else None
    if resume_from is not None:
        saved_world = load_checkpoint(resume_from, rank=0, weights_only=True)["state"].get("world", 1)
        if saved_world != d.world and t.zero_stage == 1:
            raise ConfigError(f"{resume_from} holds ZeRO-1 optimizer shards for {saved_world} ranks; resume with "
                              f"--nproc_per_node={saved_world} (re-sharding ZeRO-1 state is not supported)")
        # Another world size: without ZeRO every rank's optimizer state is the same full copy and
        # the loader position counts global batches, so every rank starts from rank 0's files.
        ck = load_checkpoint(resume_from, d.rank if saved_world == d.world else 0)
        model.load_state_dict(ck["model"])
        load_optimizer_shard_state(optimizer, ck["optimizer"])
        train_loader.load_state_dict(ck["loader"])
        restore_rng(ck["rng"])
        start_step, skipped = ck["state"]["step"], ck["state"].get("skipped_updates", 0)
        nonfinite_in_a_row = ck["state"].get("nonfinite_in_a_row", 0)
        if ck["state"].get("kernels", kernels) != kernels and d.is_main:  # train.kernels=auto on another machine
            log.warning("%s was trained with the %s kernels; this process runs the %s ones (train.kernels=%s): the "
                        "same model and math, a different rounding from here on", resume_from,
                        ck["state"]["kernels"], kernels, t.kernels)
        loss_value = ck["state"].get("loss", loss_value)  # the summary's, if nothing is left to train
        loss_outliers.load_state_dict(ck["state"]["loss_outliers"])
        norm_outliers.load_state_dict(ck["state"]["norm_outliers"])
    ddp_model = apply_ddp(apply_compile(model) if t.compile else model, d.world)
    overfit_batch = None
    if t.overfit_batch:  # one micro-batch, over and over; the loader's position stays where it was
        position = train_loader.state_dict()
        overfit_batch = train_loader.next_batch()
        train_loader.load_state_dict(position)
    device_name = torch.cuda.get_device_name() if device_type == "cuda" else None
    peak_flops = peak_bf16_flops(device_name)
    lineage = {"run_tag": identity.tag, "shards_dir": recorded_path(Path(train_glob).parent, cfg.data_dir),
               "train_shards": shard_lineage(train_glob), "val_shards": shard_lineage(val_glob) if val_loader else [],
               "code_version": identity.code_version, "git_commit": git_commit(), "gpt2train_version": __version__}

    if d.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _setup_file_log(out_dir / "main.log")
        n = model.num_params()
        log.info("model %s: %s parameters, %s FLOPs/token, %s kernels; B=%d T=%d world=%d grad_accum=%d, "
                 "steps %d..%d%s", cfg.model.descriptor, f"{n:,}", f"{model.flops_per_token(t.seq_len):,}",
                 kernels + (" (Triton interpreter)" if kernels == "triton" and device_type != "cuda" else ""),
                 t.batch_size,
                 t.seq_len, d.world, grad_accum, start_step, max_steps,
                 f" (resumed from {resume_from})" if resume_from else "")
        if device_name and peak_flops is None:
            log.info(unknown_device_note(device_name))
        restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
        if restarts:
            log.info("torchrun restart %d of this job (--max-restarts): every rank was started again", restarts)
    metrics_path = out_dir / "metrics.jsonl"
    if d.is_main and metrics_path.exists():
        # Drop what a crashed run logged after its last checkpoint (and a line it tore): those steps
        # are redone now. Rewritten whole under a temp name: a kill here loses nothing.
        kept = [r for r in read_metrics_file(metrics_path) if _logged_before(r, start_step)]
        with atomic_output(metrics_path, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in kept))

    def write_metric(record: dict) -> None:
        if d.is_main:
            history.append(record)
            try:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as e:  # a torn last line is dropped on resume (runs.read_metrics_file)
                if is_disk_full(e):
                    raise disk_full_error(metrics_path) from e
                raise

    def checkpoint_due(step: int) -> bool:
        return bool(t.checkpoint_every and step % t.checkpoint_every == 0) or step == max_steps

    def eval_due(step: int, every: int) -> bool:
        # Every checkpoint is evaluated too, so that what it records (and its report shows) is its own.
        return step % every == 0 or checkpoint_due(step)

    def in_loop_evals(step: int) -> float | None:
        """Val loss and HellaSwag of the weights after `step` updates, when due; returns the val loss."""
        val_loss = None
        if val_loader is not None and eval_due(step, t.val_every):
            with autocast():
                val_loss = evaluate(ddp_model, val_loader, t.val_batches, device, d)
            write_metric({"step": step, "val_loss": val_loss})
            if d.is_main:
                log.info("step %d/%d | val loss %.6f", step, max_steps, val_loss)
        hs_due = hellaswag is not None and step > 0 and eval_due(step, hellaswag_every)  # llm.c: not at step 0
        if hs_due:
            with autocast():
                hs = score_hellaswag(model, hellaswag, device, d.rank, d.world)
            write_metric({"step": step, "hellaswag_acc_norm": hs["acc_norm"], "hellaswag_acc": hs["acc"],
                          "hellaswag_n": hs["n"]})
            if d.is_main:
                log.info("step %d/%d | HellaSwag acc_norm %.4f (%d items, llm.c scorer)", step, max_steps,
                         hs["acc_norm"], hs["n"])
        if (val_loss is not None or hs_due) and d.is_main:
            plot_training(metrics_path, out_dir / "training.png", title=f"{cfg.model.descriptor} · {out_dir.name}")
        return val_loss

    if d.is_main and start_step >= max_steps:
        log.info("nothing to train: %s already holds the final step %d", resume_from, start_step)
    if start_step == 0:
        in_loop_evals(0)  # the untrained model (a resumed run logged its start step's before saving it)
    for step in range(start_step, max_steps):
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for micro in range(grad_accum):
            x, y = overfit_batch or train_loader.next_batch()
            # Gradients are all-reduced once per step, on the last micro-batch.
            sync = contextlib.nullcontext() if (d.world == 1 or micro == grad_accum - 1) else ddp_model.no_sync()
            with sync:
                with autocast():
                    _, loss = ddp_model(x.to(device), y.to(device))
                (loss / grad_accum).backward()
            loss_sum += loss.detach()
        if d.world > 1:
            dist.all_reduce(loss_sum)
        loss_value = (loss_sum / (grad_accum * d.world)).item()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip).item()
        lr = learning_rate(step, t, max_steps)
        # A NaN/Inf loss or grad norm never reaches the weights (nor the outlier statistics); llm.c's
        # -sl/-sg skip an update whose loss or grad norm is an outlier against the last 128 steps.
        # Every rank decides the same: the loss is all-reduced, the norm is of all-reduced grads.
        nonfinite = not (math.isfinite(loss_value) and math.isfinite(norm))
        if nonfinite:
            skip, nonfinite_in_a_row = True, nonfinite_in_a_row + 1
            log.warning("step %d: loss %s, grad norm %s: not finite, update skipped (%d in a row)",
                        step + 1, loss_value, norm, nonfinite_in_a_row)
        else:
            nonfinite_in_a_row = 0
            loss_z, norm_z = loss_outliers.update(loss_value), norm_outliers.update(norm)
            skip = (t.skip_loss_z > 0 and loss_z > t.skip_loss_z) or (t.skip_grad_z > 0 and norm_z > t.skip_grad_z)
            if skip:
                log.warning("step %d: update skipped (loss z %.2f, grad-norm z %.2f)", step + 1, loss_z, norm_z)
        if skip:
            skipped += 1
        else:
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device_type == "cuda":
            torch.cuda.synchronize()  # the optimizer step is queued, not done: time it too
        ms = (time.perf_counter() - t0) * 1000
        tok_s = t.total_batch_tokens / (ms / 1000)
        # MFU per GPU against its dense bf16 peak (gpt2train/training/mfu.py); omitted where unknown (CPU).
        mfu = model.flops_per_token(t.seq_len) * tok_s / (peak_flops * d.world) if peak_flops else None
        write_metric({"step": step + 1, "loss": loss_value, "norm": norm, "lr": lr, "skipped": skip,
                      **({"nonfinite": True} if nonfinite else {}), "ms": ms, "tok_s": tok_s,
                      "mem_mb": memory_mb(device_type), **({"mfu": mfu} if mfu is not None else {})})
        if d.is_main:
            mfu_text = f" | MFU {100 * mfu:.1f}%" if mfu is not None else ""
            log.info("step %4d/%d | loss %.6f | norm %.4f | lr %.2e | %.1f ms%s | %.0f tok/s",
                     step + 1, max_steps, loss_value, norm, lr, ms, mfu_text, tok_s)

        done = step + 1
        failpoint("train.step_done")
        if nonfinite and t.max_nonfinite_steps and nonfinite_in_a_row >= t.max_nonfinite_steps:
            raise TrainingDiverged(_diverged_message(done, nonfinite_in_a_row, t.max_nonfinite_steps, ckpt_root))
        val_loss = in_loop_evals(done)
        if d.is_main and t.sample_every and (done % t.sample_every == 0 or done == max_steps):
            log.info("sample at step %d: %r", done, sample_text(model, t.sample_tokens, t.seed, device))
        if checkpoint_due(done):
            path = save_checkpoint(
                ckpt_root, done, model_state=model.state_dict() if d.is_main else None,
                optimizer_state=optimizer_shard_state(optimizer), loader_state=train_loader.state_dict(),
                # val_loss: of these very weights (in_loop_evals runs at every checkpoint step), or None
                # when validation is off.
                state={"world": d.world, "kernels": kernels, "loss": loss_value, "val_loss": val_loss,
                       "data_dir": data_dir_field(step_dir(ckpt_root, done), cfg.data_dir), "config": config_to_dict(cfg),
                       "skipped_updates": skipped, "nonfinite_in_a_row": nonfinite_in_a_row,
                       "loss_outliers": loss_outliers.state_dict(),
                       "norm_outliers": norm_outliers.state_dict(),
                       "lineage": lineage} if d.is_main else None,
                rank=d.rank, barrier=d.barrier)
            if d.is_main:
                prune_checkpoints(ckpt_root, t.keep_last, t.major_every)
                log.info("checkpoint %s", path)
                if on_checkpoint is not None:
                    on_checkpoint(path)
    return {"steps": max_steps, "final_loss": loss_value, "skipped_updates": skipped, "out_dir": str(out_dir),
            "kernels": kernels, "peak_memory_mb": peak_memory_mb(device_type)}


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


@torch.no_grad()
def sample_text(model: GPT, tokens: int, seed: int, device: str) -> str:
    """A sample from <|endoftext|> (top-k 40), on its own generator: training RNG is untouched."""
    from gpt2train.data.tokenizer import EOT_TOKEN, get_encoding

    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(torch.tensor([[EOT_TOKEN]], device=device), tokens, temperature=1.0, top_k=40, generator=gen)
    model.train(was_training)
    return get_encoding("gpt2").decode(out[0, 1:].tolist())


def memory_mb(device_type: str) -> float | None:
    """Memory in use now: CUDA allocator bytes on GPU, the process's resident set on CPU (Linux)."""
    if device_type == "cuda":
        return torch.cuda.memory_allocated() / 2**20
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None


def peak_memory_mb(device_type: str) -> float:
    """The most this process held: CUDA allocator bytes on GPU, the peak resident set on CPU."""
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _diverged_message(step: int, in_a_row: int, limit: int, ckpt_root: Path) -> str:
    last_good = latest_checkpoint(ckpt_root)
    where = (f"the last good checkpoint is {last_good} (step {int(STEP_DIR.match(last_good.name)[1])}); the run resumes "
             f"from it when started again" if last_good else "no checkpoint was written yet")
    return (f"training stopped at step {step}: the loss or gradient norm was NaN/Inf for {in_a_row} steps in a row "
            f"(steps {step - in_a_row + 1}..{step}; train.max_nonfinite_steps={limit}); none of them updated the "
            f"weights. {where}. Lower train.learning_rate or raise train.warmup_steps, or check the data; "
            f"train.max_nonfinite_steps=0 keeps skipping instead of stopping")


def _logged_before(record: dict, start_step: int) -> bool:
    # Every record's step counts completed updates, and the evals of a checkpoint's step are logged
    # before it is saved: what a resumed run keeps is everything up to its checkpoint's step. A run
    # that starts over from step 0 keeps nothing (it evaluates step 0 again).
    return start_step > 0 and record["step"] <= start_step


def _setup_file_log(path: Path) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpt2train.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    ap.add_argument("--help", action="help", help="show this help (-h is llm.c's HellaSwag flag)")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--kernels", choices=KERNEL_CHOICES,
                    help="hot-path ops (train.kernels): auto = Triton on CUDA, PyTorch elsewhere")
    rest, llmc_overrides = llmc_args_to_overrides(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(rest)
    args.overrides = llmc_overrides + args.overrides + ([f"train.kernels={args.kernels}"] if args.kernels else [])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        summary = train(load_config(args.config, args.overrides))
    except Gpt2TrainError as e:
        print(f"gpt2train train: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
