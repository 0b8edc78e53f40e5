"""Each stage's output on fixed inputs, and the recorded outputs (goldens) it must match.

    python -m tests.golden_outputs --check                 # every stage; exit 1 naming what moved
    python -m tests.golden_outputs --check --stage shards
    python -m tests.golden_outputs --update                # after bumping gpt2train/lineage/stage_versions.py
    python -m tests.golden_outputs --margins               # how close each stage is to its tolerance

A stage's Dagster code version is its number in gpt2train/lineage/stage_versions.py and its settings, not a
hash of its source (docs/lineage.md says why). What keeps those numbers honest is this module: it
computes what each stage produces from fixed inputs, on the CPU, and tests/test_stage_versions.py
compares it with tests/golden/stage_outputs.json, recorded at each stage's version. An output that
changed while its stage's number did not is a failure that names the stage and what moved.

What each stage's output is, here:
- corpus: which documents of a source file are used (count and a hash of their texts);
- shards: the bytes (sha256) of every shard of two source files, in llm.c's stream layout and in
  the per-file partition layout;
- training: the LR of every schedule at chosen steps, GPT-2's initial weights, one AdamW step, the
  loader's batch order, and three training steps (losses, grad norms, val losses, final weights);
- triton_kernels: every kernel's forward output and input gradients on odd shapes (interpreter);
- export: the export's weights, config and tokenizer files;
- evals: lm-eval's scores of that export on 4 local HellaSwag-schema items, and the log-likelihood
  of each of their endings;
- eval_summary: the rows the summary gathers from two reports.

Floats are compared within tolerances taken from a measured spread (docs/testing.md): the same
stage computed with 1, 2 and 4 threads and with PyTorch's unvectorized kernels
(ATEN_CPU_CAPABILITY=default: another reduction order, and other roundings in the RNG's normal
transform). A tensor is recorded by its checksum (element count, sum, sum of magnitudes, sum of
squares and a position-weighted sum, in float64), and its sums are compared against the sum of its
elements' magnitudes, not against the sums themselves: a sum that cancels to near zero (the gradient
of a key bias, the sum of dK in attention) moves by a rounding of the tensor's elements, which is
tiny next to the tensor and huge next to the sum. The three training steps run in float64 (`training`): in
float32 a parameter whose gradient is zero in exact arithmetic (the attention's key bias: softmax
does not see a constant added to every key) gets a gradient of pure rounding noise, and AdamW's
first steps turn any gradient much larger than its eps into +-lr, so its weights move by the sign of
the noise: one CPU's rounding against another's. In float64 that noise is ~1e-16, far below eps,
and moves nothing. Inputs come from ../shared (GPT2TRAIN_SHARED overrides where, for a copy of the
repo elsewhere).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, NamedTuple

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GPT2TRAIN_SHARED", REPO.parent / "shared"))
EDU_MINI = SHARED / "data" / "edu-mini"
HELLASWAG = SHARED / "data" / "hellaswag-format" / "invented_val.jsonl"
GOLDEN = Path(__file__).resolve().parent / "golden" / "stage_outputs.json"
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

FILES = ["sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet"]
class Tolerance(NamedTuple):
    """How far a recorded value may move: a plain float (a loss, a learning rate, a score, a
    log-likelihood) by `rel` relatively or `abs` absolutely, whichever is larger; a tensor's checksum
    sums by `tensor` times the sum of its elements' magnitudes (its sum of squares by twice that,
    relatively). The figures and their margins, measured: docs/testing.md (`--margins` prints them)."""
    rel: float
    abs: float
    tensor: float


DEFAULT_TOLERANCE = Tolerance(1e-5, 1e-6, 1e-5)
# Every kernel input is exact (triton_kernels_outputs), so only reduction order moves their outputs:
# ~1e-9 measured; a deliberate change of the kernels' math moves them ~1e-5.
TOLERANCE = {"evals": Tolerance(1e-4, 1e-4, 1e-5), "triton_kernels": Tolerance(1e-5, 1e-6, 1e-7)}
CHECKSUM = ("n", "sum", "abssum", "sumsq", "wsum")


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _data_cfg(work: Path, *sets: str):
    from gpt2train.config import load_config

    return load_config("tiny", [f"data_dir={work / 'data'}", f"corpus.source={EDU_MINI}",
                                "corpus.max_documents_per_file=12", "shards.shard_size=3000", "shards.threads=1",
                                *sets])


def _records(cfg) -> list:
    from gpt2train.data.corpus import fetch_source_file

    return [fetch_source_file(cfg.corpus, key, Path(cfg.data_dir)) for key in FILES]


def corpus_outputs(work: Path) -> dict:
    from gpt2train.data.corpus import iter_document_batches

    cfg = _data_cfg(work)
    out = {}
    for record in _records(cfg):
        texts = [t for batch in iter_document_batches(record.local_path, cfg.corpus.text_field, 5,
                                                      cfg.corpus.max_documents_per_file) for t in batch]
        out[record.key] = {"documents": record.documents, "texts_sha256": _sha("\0".join(texts))}
    return out


def shards_outputs(work: Path) -> dict:
    from gpt2train.data.shard_writer import write_partition_shards, write_shards

    cfg = _data_cfg(work)
    records = _records(cfg)
    stream = write_shards(records, work / "stream", cfg, layout="stream", progress=False)
    partition = write_partition_shards(records[1], work / "partition", cfg, is_val_file=False, progress=False)
    return {"stream": {s["file"]: s["sha256"] for s in stream.shards},
            "partition": {s["file"]: s["sha256"] for s in partition["shards"]}}


def _checksums(tensors: dict) -> dict:
    """{name: {n, sum, abssum, sumsq, wsum}} in float64: the element count, the sum, the sum of magnitudes,
    the sum of squares and a position-weighted sum (which moves when elements swap places)."""
    import torch

    out = {}
    for name, t in tensors.items():
        v = t.detach().double().flatten()
        weights = torch.arange(1, v.numel() + 1, dtype=v.dtype) / v.numel()
        out[name] = {"n": v.numel(), "sum": float(v.sum()), "abssum": float(v.abs().sum()),
                     "sumsq": float(v.square().sum()), "wsum": float((v * weights).sum())}
    return out


def _random_shards(root: Path) -> tuple[str, str]:
    import numpy as np

    from gpt2train.data.shards import ShardFileWriter

    rng = np.random.default_rng(0)
    for name, n in (("golden_train_000001.bin", 6000), ("golden_train_000002.bin", 5000),
                    ("golden_val_000000.bin", 3000)):
        writer = ShardFileWriter(root / name)
        writer.write(rng.integers(0, 50257, size=n, dtype=np.uint16))
        writer.finish()
    return str(root / "golden_train_*.bin"), str(root / "golden_val_*.bin")


def training_outputs(work: Path) -> dict:
    import torch

    from gpt2train.config import TrainConfig, load_config
    from gpt2train.data.loader import ShardLoader
    from gpt2train.model import GPT, GPTConfig
    from gpt2train.training.parallelize import build_optimizer
    from gpt2train.training.loop import train
    from gpt2train.training.schedule import learning_rate

    out: dict[str, Any] = {}
    t = TrainConfig(warmup_steps=5, learning_rate=1e-3, final_lr_frac=0.1)
    out["lr"] = {s: [learning_rate(step, dataclasses.replace(t, lr_schedule=s), 20) for step in (0, 2, 4, 5, 9, 15, 19)]
                 for s in ("cosine", "linear", "constant", "wsd")}
    model = GPT(GPTConfig.from_descriptor("tiny", 64)).init_weights(1337)
    out["init"] = _checksums(dict(model.named_parameters()))
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = 0.01 * torch.randn(p.shape, generator=gen)
    optimizer = build_optimizer(model, t, "cpu", world=1)
    optimizer.step()
    out["adamw_step"] = _checksums(dict(model.named_parameters()))

    train_glob, val_glob = _random_shards(work / "shards")
    loader = ShardLoader(train_glob, 2, 32, seed=7)
    out["loader"] = [[int(x.sum()), int(y[:, -1].sum())] for x, y in (loader.next_batch() for _ in range(6))]
    # Two ranks, two micro-batches a step: which window each (rank, micro-batch) reads.
    ranks = [ShardLoader(train_glob, 2, 32, rank=r, world=2, seed=7, accum=2) for r in (0, 1)]
    out["loader_world2_accum2"] = [[int(loader.next_batch()[0].sum()) for loader in ranks] for _ in range(6)]

    cfg = load_config("tiny", [f"data_dir={work}", f"train.out_dir={work / 'run'}", f"train.train_glob={train_glob}",
                               f"train.val_glob={val_glob}", "train.batch_size=2", "train.seq_len=32",
                               "train.total_batch_tokens=128", "train.max_steps=3", "train.warmup_steps=1",
                               "train.val_every=3", "train.val_batches=1", "train.checkpoint_every=0",
                               "train.hellaswag_every=0", "train.sample_every=0", "train.kernels=torch"])
    # In float64 (the module docstring says why): the model, its gradients and AdamW's state.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        train(cfg)
    finally:
        torch.set_default_dtype(default_dtype)
    records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    out["loop"] = {"loss": [r["loss"] for r in records if "loss" in r], "norm": [r["norm"] for r in records if "norm" in r],
                   "val_loss": [r["val_loss"] for r in records if "val_loss" in r]}
    from safetensors.torch import load_file

    out["loop"]["weights"] = _checksums(load_file(work / "run" / "checkpoints" / "step_00000003" / "model.safetensors"))
    return out


def triton_kernels_outputs(work: Path) -> dict:
    """Forward outputs and input gradients of each kernel, fp32, in Triton's CPU interpreter."""
    import torch

    import gpt2train.kernels  # noqa: F401  (the interpreter, before the op modules load)
    from gpt2train.kernels.attention import causal_attention
    from gpt2train.kernels.classifier import fused_classifier
    from gpt2train.kernels.gelu import bias_gelu
    from gpt2train.kernels.layernorm import residual_layernorm

    gen = torch.Generator().manual_seed(0)

    def exact(*shape):
        # Multiples of 1/32 in [-2, 2], from the integer generator: the same bits on every CPU (randn's
        # normal transform rounds differently on another vector unit), so only the kernels' own
        # arithmetic can move the outputs.
        return torch.randint(-64, 65, shape, generator=gen).float() / 32

    def leaf(*shape):
        return exact(*shape).requires_grad_(True)

    def run(fn: Callable, inputs: list, grads_of: list) -> dict:
        outputs = fn(*inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        loss = sum((o * exact(*o.shape)).sum() for o in outputs)
        loss.backward()
        return _checksums({**{f"out{i}": o.detach() for i, o in enumerate(outputs)},
                           **{f"grad{i}": inputs[i].grad for i in grads_of}})

    x, d, w, b = leaf(23, 48), leaf(23, 48), leaf(48), leaf(48)
    h, hb = leaf(23, 200), leaf(200)
    q, k, v = leaf(2, 3, 47, 16), leaf(2, 3, 47, 16), leaf(2, 3, 47, 16)
    xc, wc = leaf(37, 48), leaf(1024, 48)
    targets = torch.randint(0, 1000, (37,), generator=gen)
    out = {"residual_layernorm": run(residual_layernorm, [x, d, w, b], [0, 1, 2, 3]),
           "bias_gelu": run(bias_gelu, [h, hb], [0, 1]),
           "causal_attention": run(causal_attention, [q, k, v], [0, 1, 2]),
           "fused_classifier": run(lambda a, m: fused_classifier(a, m, targets, 1000, chunk_rows=16), [xc, wc],
                                   [0, 1])}
    # The kernels wired into the model: one forward and backward of a small GPT with kernels=triton.
    from gpt2train.model import GPT, GPTConfig

    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=300, padded_vocab_size=320),
                kernels="triton")
    with torch.no_grad():  # exact weights too: the `training` stage checks the initialisation itself
        for p in model.parameters():
            p.copy_(exact(*p.shape) / 16)
    idx = torch.randint(0, 300, (2, 9), generator=gen)
    _, loss = model(idx, torch.roll(idx, -1, 1))
    loss.backward()
    out["model"] = {"loss": float(loss.detach()), **_checksums({n: p.grad for n, p in model.named_parameters()})}
    return out


def _tiny_export(work: Path) -> Path:
    from gpt2train.training.checkpoint import save_checkpoint
    from gpt2train.config import config_to_dict, load_config
    from gpt2train.export.hf_export import export_checkpoint
    from gpt2train.model import GPT, GPTConfig

    model = GPT(GPTConfig.from_descriptor("tiny", 64)).init_weights(0)
    lineage = {"run_tag": "tiny-golden", "code_version": "0" * 16, "train_shards": [], "val_shards": []}
    ckpt = save_checkpoint(work / "runs" / "tiny-golden" / "checkpoints", 2, model_state=model.state_dict(),
                           optimizer_state={}, loader_state={},
                           state={"config": config_to_dict(load_config("tiny")), "loss": 5.0, "lineage": lineage})
    return export_checkpoint(ckpt, work / "export").out_dir


def export_outputs(work: Path) -> dict:
    """The export's config and tokenizer files, and its weights file: every tensor's name, dtype and shape
    and the file's metadata exactly, the values by checksum (their bytes follow the RNG's normal transform,
    which differs in the last bit between CPUs' vector units)."""
    from safetensors import safe_open

    out_dir = _tiny_export(work)
    config = {k: v for k, v in json.loads((out_dir / "config.json").read_text()).items() if k != "transformers_version"}
    with safe_open(out_dir / "model.safetensors", "pt") as f:
        names = list(f.keys())
        weights = {"metadata": f.metadata(),
                   "layout": {k: [f.get_slice(k).get_dtype(), f.get_slice(k).get_shape()] for k in names},
                   "values": _checksums({k: f.get_tensor(k) for k in names})}
    return {"files": {name: _sha((out_dir / name).read_bytes()) for name in ("vocab.json", "merges.txt")},
            "weights": weights, "config": config}


def evals_outputs(work: Path) -> dict:
    from evals.runner import evaluate_export
    from gpt2train.config import EvalsConfig

    ecfg = EvalsConfig(tasks=["hellaswag"], limit=4, local_data=[f"hellaswag={HELLASWAG}"], batch_size=4, device="cpu")
    report = evaluate_export(_tiny_export(work), work / "report", ecfg, model_label="golden")
    # The scores, and under them the log-likelihood of every ending (an untrained model's accuracy on
    # 4 items would hide most changes).
    samples = {p.name: [[r[0] for r in json.loads(line)["filtered_resps"]] for line in p.read_text().splitlines()]
               for p in sorted((work / "report").glob("samples_*.jsonl"))}
    return {"metrics": {task: {m: v for m, v in metrics.items() if not m.endswith("_stderr")}
                        for task, metrics in report.metrics.items()}, "loglikelihoods": samples}


def eval_summary_outputs(work: Path) -> dict:
    from evals.trend import read_reports

    dirs = []
    for run, step, acc in (("tiny-b", 20, 0.3), ("tiny-a", 40, 0.25)):
        d = work / f"{run}@{step}"
        d.mkdir()
        (d / "lineage.json").write_text(json.dumps({"artifact": "eval_report", "step": step,
                                                    "checkpoint": {"run_tag": run, "key": f"{run}@step_{step:08d}"},
                                                    "metrics": {"hellaswag": {"acc": acc}}, "in_loop": {}}))
        dirs.append(d)
    # Two directories of one run tag (the summary keeps them apart), and an in-loop number.
    d = work / "tiny-a-again@20"
    d.mkdir()
    (d / "lineage.json").write_text(json.dumps({"artifact": "eval_report", "step": 20,
                                                "checkpoint": {"run_tag": "tiny-a", "key": "tiny-a-again@step_00000020"},
                                                "metrics": {"hellaswag": {"acc": 0.2}},
                                                "in_loop": {"val_loss": {"value": 7.5, "step": 20}}}))
    dirs.append(d)
    rows, _ = read_reports(dirs)
    return {"rows": [{k: r[k] for k in ("run", "run_tag", "step", "metrics", "in_loop")} for r in rows]}


STAGES: dict[str, Callable[[Path], dict]] = {
    "corpus": corpus_outputs, "shards": shards_outputs, "training": training_outputs,
    "triton_kernels": triton_kernels_outputs, "export": export_outputs, "evals": evals_outputs,
    "eval_summary": eval_summary_outputs,
}


def compute(stage: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"golden-{stage}-") as tmp:
        return STAGES[stage](Path(tmp))


def _allowed(expected: dict, tensor: float) -> dict[str, float]:
    """How far each sum of a tensor's checksum may move: rounding moves a sum by a small fraction of the
    sum of its terms' magnitudes, however much the terms cancel."""
    return {"sum": tensor * expected["abssum"], "abssum": tensor * expected["abssum"],
            "sumsq": 2 * tensor * expected["sumsq"], "wsum": tensor * expected["abssum"]}


def _is_checksum(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == set(CHECKSUM)


def differences(expected: Any, actual: Any, tol: Tolerance, where: str = "") -> list[str]:
    """Where `actual` differs from `expected`: floats and tensors beyond the tolerance, anything else at all."""
    if _is_checksum(expected) and _is_checksum(actual) and actual["n"] == expected["n"]:
        return [f"{where}/{key}: {expected[key]!r} recorded, {actual[key]!r} now (a tensor of {expected['n']} "
                f"elements, sum of magnitudes {expected['abssum']:.4g})"
                for key, allowed in _allowed(expected, tol.tensor).items()
                if not abs(actual[key] - expected[key]) <= allowed]
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{where}/{k}: missing now" for k in expected if k not in actual]
        out += [f"{where}/{k}: new" for k in actual if k not in expected]
        for k in expected:
            if k in actual:
                out += differences(expected[k], actual[k], tol, f"{where}/{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(expected)} items recorded, {len(actual)} now"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in differences(e, a, tol, f"{where}[{i}]")]
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(expected, (int, float)) and isinstance(actual, (int, float)) and \
                math.isclose(expected, actual, rel_tol=tol.rel, abs_tol=tol.abs):
            return []
        return [f"{where}: {expected!r} recorded, {actual!r} now"]
    return [] if expected == actual else [f"{where}: {expected!r} recorded, {actual!r} now"]


def tolerance_used(expected: Any, actual: Any, tol: Tolerance, where: str = "") -> tuple[float, str]:
    """The largest deviation of `actual` from `expected` as a fraction of what the tolerance allows (1.0: at
    the limit; inf: a difference no tolerance covers), and where: how far a run is from failing."""
    if _is_checksum(expected) and _is_checksum(actual) and actual["n"] == expected["n"]:
        return max((abs(actual[k] - expected[k]) / allowed if allowed else
                    (0.0 if actual[k] == expected[k] else math.inf), f"{where}/{k}")
                   for k, allowed in _allowed(expected, tol.tensor).items())
    if isinstance(expected, dict) and isinstance(actual, dict):
        if set(expected) != set(actual):
            return math.inf, where
        return max((tolerance_used(expected[k], actual[k], tol, f"{where}/{k}") for k in expected),
                   default=(0.0, where))
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return math.inf, where
        return max((tolerance_used(e, a, tol, f"{where}[{i}]") for i, (e, a) in enumerate(zip(expected, actual))),
                   default=(0.0, where))
    if isinstance(expected, float) or isinstance(actual, float):
        if not (isinstance(expected, (int, float)) and isinstance(actual, (int, float))):
            return math.inf, where
        return abs(actual - expected) / max(tol.rel * max(abs(expected), abs(actual)), tol.abs), where
    return (0.0 if expected == actual else math.inf), where


def check(stage: str, golden: dict | None = None) -> list[str]:
    """Problems of `stage` against the goldens: [] when its output is the recorded one at its version."""
    from gpt2train.lineage.stage_versions import STAGE_VERSIONS

    golden = golden if golden is not None else json.loads(GOLDEN.read_text())
    version = STAGE_VERSIONS[stage]
    recorded = golden.get(stage)
    if recorded is None or recorded["version"] != version:
        at = "none is recorded" if recorded is None else f"they were recorded at version {recorded['version']}"
        return [f"stage {stage} is at version {version} in gpt2train/lineage/stage_versions.py but {at}: refresh the "
                f"goldens with `python -m tests.golden_outputs --update --stage {stage}`"]
    moved = differences(recorded["outputs"], compute(stage), TOLERANCE.get(stage, DEFAULT_TOLERANCE), where=stage)
    if not moved:
        return []
    shown = "; ".join(moved[:3]) + (f"; and {len(moved) - 3} more" if len(moved) > 3 else "")
    return [f"stage {stage}'s output changed while its version stayed {version}: {shown}. If the change is meant, "
            f"bump {stage!r} in gpt2train/lineage/stage_versions.py (everything it made is then stale) and refresh the "
            f"goldens with `python -m tests.golden_outputs --update --stage {stage}`; if not, it is a regression"]


def update(stages: list[str]) -> None:
    from gpt2train.lineage.stage_versions import STAGE_VERSIONS

    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    for stage in stages:
        golden[stage] = {"version": STAGE_VERSIONS[stage], "outputs": compute(stage)}
        print(f"{stage}: recorded at version {STAGE_VERSIONS[stage]}")
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


def code_versions(*overrides: str) -> dict[str, str]:
    """Every asset's code version for the `tiny` preset (with `overrides`), as the assets compute them."""
    from evals.tasks import evals_code_version
    from gpt2train.config import load_config
    from gpt2train.data.stage import corpus_code_version
    from gpt2train.export.hf_export import export_code_version
    from gpt2train.lineage.records import code_version
    from gpt2train.data.shard_writer import shards_code_version
    from gpt2train.training.run_identity import train_code_version

    cfg = load_config("tiny", list(overrides))
    return {"corpus": corpus_code_version(cfg), "token_shards": shards_code_version(cfg),
            "training_run": train_code_version(cfg), "hf_export": export_code_version(),
            "eval_report": evals_code_version(cfg.evals), "eval_summary": code_version(["eval_summary"], {})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the goldens (the default)")
    ap.add_argument("--update", action="store_true", help="record the goldens anew")
    ap.add_argument("--stage", action="append", choices=list(STAGES), help="only these stages (repeatable)")
    ap.add_argument("--versions", action="store_true", help="print the tiny preset's code versions as JSON")
    ap.add_argument("--margins", action="store_true",
                    help="print how much of its tolerance each stage's largest deviation uses (docs/testing.md)")
    args = ap.parse_args()
    stages = args.stage or list(STAGES)
    if args.versions:
        print(json.dumps(code_versions()))
        return 0
    if args.margins:
        golden = json.loads(GOLDEN.read_text())
        for stage in stages:
            used, where = tolerance_used(golden[stage]["outputs"], compute(stage), TOLERANCE.get(stage, DEFAULT_TOLERANCE),
                                         where=stage)
            print(f"{stage}: {used:.3g} of the tolerance, at {where}")
        return 0
    if args.update:
        update(stages)
        return 0
    problems = [p for stage in stages for p in check(stage)]
    for p in problems:
        print(p)
    print("goldens: " + ("ok" if not problems else f"{len(problems)} stage(s) differ"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
