"""Published figures for GPT-2-size models, each with where it was published: what every eval report
shows beside a checkpoint's own numbers (evals/report.py), for every preset's model size, and the
lines training.png draws. The library's, since the trainer's plot needs it; evals/published.py
hands the same names to the eval code.

    published_baselines()   # {"models": {"124M": {figure: value}}, "sources": {figure: source}, ...}

`evals.baselines_file` can point at a JSON file of the same shape instead (e.g. figures of your own
reference runs); unset, this table is used. Scorers differ and so do the numbers: the Eleuther
harness's HellaSwag acc_norm normalises an ending's log-likelihood by its length in characters,
llm.c's scorer (and gpt2train's in-loop eval, gpt2train/training/hellaswag.py) takes the mean loss per
token. On GPT-2 124M they give 0.3114 and 0.2955. A report compares a number only with figures of
its own scorer and data.

GPT-3's sizes are matched to GPT-2's as llm.c's plots match them: GPT-3 Small (125M) with 124M,
Medium (350M) with 350M, Large (760M) with 774M, XL (1.3B) with 1558M.

    baseline_lines(12, 768)   # the horizontal lines training.png draws for a 124M-shaped model

`baseline_lines` is what gpt2train/training/plots.py draws on training.png, as llm.c's dev/vislog.ipynb
does: OpenAI's GPT-2 val loss and HellaSwag and GPT-3's HellaSwag at the model's size, only for a
shape that is one of GPT-2's published sizes (a `tiny` model gets none).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt2train.model_config import DEPTH_SHAPES

SIZES = ("124M", "350M", "774M", "1558M")
# GPT-2's published sizes by depth (llm.c's -e dN with DEPTH_SHAPES' width), and their nominal
# parameter counts (what "N× smaller than the comparison" is measured against).
PUBLISHED_SIZES = {12: "124M", 24: "350M", 36: "774M", 48: "1558M"}
NOMINAL_PARAMS = {"124M": 124e6, "350M": 350e6, "774M": 774e6, "1558M": 1558e6}
# The GPT-3 model each GPT-2 size is compared with (llm.c's vislog pairs them so).
GPT3_SIZES = {"124M": "Small 125M", "350M": "Medium 350M", "774M": "Large 760M", "1558M": "XL 1.3B"}

VISLOG = "karpathy/llm.c dev/vislog.ipynb: the baseline lines of its plots"
HELLASWAG_SCRIPT = "karpathy/llm.c dev/data/hellaswag.py docstring (all 10,042 validation items)"
GPT3_PAPER = ("Brown et al. 2020, Language Models are Few-Shot Learners, zero-shot HellaSwag of GPT-3 "
              "Small / Medium / Large / XL, as quoted in llm.c's dev/vislog.ipynb")
BUILD_NANOGPT = "karpathy/build-nanogpt play.ipynb: the GPT-2 checkpoint's val loss line (FineWeb-Edu 10B val shard)"


@dataclass(frozen=True)
class Figure:
    name: str              # the key reports use (evals/report.py BASELINE_LABELS)
    values: dict           # model size -> value; sizes without a published figure are absent
    source: str


FIGURES = [
    # HellaSwag, llm.c's scorer: OpenAI's GPT-2 checkpoints.
    Figure("gpt2_hellaswag_llmc", {"124M": 0.294463, "350M": 0.375224, "774M": 0.431986, "1558M": 0.488946}, VISLOG),
    Figure("gpt2_hellaswag_llmc_script_acc_norm", {"124M": 0.2955, "1558M": 0.4893}, HELLASWAG_SCRIPT),
    Figure("gpt2_hellaswag_llmc_script_acc", {"124M": 0.2859, "1558M": 0.3842}, HELLASWAG_SCRIPT),
    # HellaSwag, the Eleuther harness (the eval report's own scorer).
    Figure("gpt2_harness_hellaswag_acc_norm", {"124M": 0.3114, "1558M": 0.5089}, HELLASWAG_SCRIPT),
    Figure("gpt2_harness_hellaswag_acc", {"124M": 0.2892, "1558M": 0.4004}, HELLASWAG_SCRIPT),
    # GPT-3 (its weights were never released: no val loss for it anywhere).
    Figure("gpt3_hellaswag", {"124M": 0.337, "350M": 0.436, "774M": 0.510, "1558M": 0.547}, GPT3_PAPER),
    # Validation loss of OpenAI's GPT-2 checkpoints on the val tokens of llm.c's data preparation.
    Figure("gpt2_val_loss_fineweb", {"124M": 3.424958, "350M": 3.083089, "774M": 3.000580, "1558M": 2.831273},
           VISLOG + " (FineWeb 10B val shard)"),
    Figure("gpt2_val_loss_fineweb_edu", {"124M": 3.2924}, BUILD_NANOGPT),
]

# The Hub dataset each published val loss was measured on: a checkpoint's own val loss stands beside one
# only when its val tokens come from that dataset (gpt2train/data/identity.py corpus_identity); on other
# text a loss says nothing about GPT-2's on this.
VAL_LOSS_DATASETS = {"gpt2_val_loss_fineweb": "HuggingFaceFW/fineweb",
                     "gpt2_val_loss_fineweb_edu": "HuggingFaceFW/fineweb-edu"}

# What training.png draws (llm.c's vislog): (figure, panel, label with {size} / {gpt3} and the source).
VISLOG_LINES = [
    ("gpt2_val_loss_fineweb", "loss", "OpenAI GPT-2 {size} val loss, FineWeb (llm.c vislog)"),
    ("gpt2_val_loss_fineweb_edu", "loss", "OpenAI GPT-2 {size} val loss, FineWeb-Edu (build-nanogpt)"),
    ("gpt2_hellaswag_llmc", "hellaswag", "OpenAI GPT-2 {size} HellaSwag (llm.c vislog)"),
    ("gpt3_hellaswag", "hellaswag", "GPT-3 {gpt3} HellaSwag (Brown et al. 2020)"),
]


@dataclass(frozen=True)
class BaselineLine:
    panel: str             # "loss" or "hellaswag": the training.png panel it is drawn on
    value: float
    label: str             # names the model, its size and where the figure was published


def published_size(n_layer: int, n_embd: int) -> str | None:
    """GPT-2's published size of exactly this shape (d12 768 wide -> `124M`), else None."""
    size = PUBLISHED_SIZES.get(n_layer)
    return size if size and DEPTH_SHAPES[n_layer][0] == n_embd else None


def baseline_lines(n_layer: int, n_embd: int) -> list[BaselineLine]:
    """The published lines training.png draws for a model of this shape: none unless the shape is
    one of GPT-2's published sizes, then each VISLOG_LINES figure this table has for that size."""
    size = published_size(n_layer, n_embd)
    if size is None:
        return []
    figures = published_baselines()["models"][size]
    return [BaselineLine(panel, figures[name], label.format(size=size, gpt3=GPT3_SIZES[size]))
            for name, panel, label in VISLOG_LINES if name in figures]


def published_baselines() -> dict:
    """The table in the shape evals.baselines_file has: figures per model size, a source per figure."""
    models: dict[str, dict[str, float]] = {size: {} for size in SIZES}
    for f in FIGURES:
        for size, value in f.values.items():
            models[size][f.name] = value
    return {"models": models, "sources": {f.name: f.source for f in FIGURES}}
