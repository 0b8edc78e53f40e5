"""In-loop HellaSwag, scored the way llm.c and build-nanogpt score it.

For each item, the context is followed by each of the 4 endings (with a leading space);
the model's mean per-token cross-entropy over the ending's tokens is the ending's score,
and the prediction is the ending with the lowest score (llm.c's "acc_norm"). `acc` uses
the summed loss instead. Published figures with this scorer are in evals/published.py
(`gpt2_hellaswag_llmc`: 0.2945 for GPT-2 124M).

The Eleuther harness scores differently (length-normalised by characters): the eval
report shows both, each next to the published number of the same scorer.

`train.hellaswag_file` may be a URL: llm.c's dev/data/hellaswag.py downloads HellaSwag's
validation file from the HellaSwag authors' GitHub (`HELLASWAG_VAL_URL`, the gpt2_* presets'
setting); `local_hellaswag_file` fetches it once into `<data_dir>/hellaswag/`.
"""

from __future__ import annotations

import http.client
import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn import functional as F

from gpt2train.config_paths import is_url
from gpt2train.errors import DataError
from gpt2train.fileio import atomic_output
from gpt2train.layout import hellaswag_download

HELLASWAG_VAL_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
# Most positions one in-loop HellaSwag forward pass takes: their fp32 logits over GPT-2's padded
# 50,304-token vocabulary are 0.8 GB, on top of what training holds.
MAX_BATCH_TOKENS = 4096


@dataclass
class HellaSwagItem:
    ctx: str
    endings: list[str]
    label: int


def local_hellaswag_file(spec: str, data_dir: str | Path) -> Path:
    """train.hellaswag_file as a local path: a path as it is; a URL downloaded once (atomically) to
    `<data_dir>/hellaswag/<its file name>` and reused from there, offline too."""
    if not is_url(spec):
        return Path(spec)
    dest = hellaswag_download(data_dir, Path(urllib.parse.urlsplit(spec).path).name)
    if dest.is_file():
        return dest
    try:
        with urllib.request.urlopen(spec, timeout=60) as response, atomic_output(dest) as f:
            shutil.copyfileobj(response, f)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:  # HTTPException: a cut-off body
        reason = getattr(e, "reason", None) or e
        raise DataError(f"train.hellaswag_file: cannot download {spec} ({reason}); put the file at {dest} by hand "
                        f"(any HellaSwag-schema jsonl) or set train.hellaswag_file to a local copy") from e
    return dest


def load_hellaswag(path: str | Path, limit: int = 0) -> list[HellaSwagItem]:
    """Items of a HellaSwag-schema jsonl; a malformed line is an error naming its line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"HellaSwag file {path} not found; set train.hellaswag_file to a HellaSwag-schema jsonl")
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                endings, label = obj["endings"], int(obj["label"])
                if not (isinstance(obj["ctx"], str) and len(endings) == 4 and all(isinstance(e, str) for e in endings)
                        and 0 <= label < 4):
                    raise ValueError("needs a string ctx, 4 string endings and a label 0-3")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise DataError(f"{path}:{lineno}: not a HellaSwag item ({type(e).__name__}: {e}); fix or remove "
                                f"the line") from e
            items.append(HellaSwagItem(obj["ctx"], endings, label))
            if limit and len(items) == limit:
                break
    if not items:
        raise DataError(f"{path} holds no HellaSwag items")
    return items


def item_rows(item: HellaSwagItem, enc, block: int) -> list[tuple[list[int], int]]:
    """The item's 4 rows: (context + ending tokens, cut to the last `block`; how many end the row as the ending)."""
    ctx = enc.encode_ordinary(item.ctx)
    rows = []
    for ending in item.endings:
        end = enc.encode_ordinary(" " + ending)
        tokens = (ctx + end)[-block:]
        rows.append((tokens, min(len(end), len(tokens))))
    return rows


def item_batches(items: list[HellaSwagItem], enc, block: int, batch_tokens: int):
    """`items` in consecutive groups whose 4 rows each, right-padded to the group's longest, hold at most
    `batch_tokens` tokens (always at least one item): [(items, [(tokens, ending length)] * 4 per item)]."""
    group, rows, width = [], [], 0
    for item in items:
        mine = item_rows(item, enc, block)
        wider = max(width, *(len(t) for t, _ in mine))
        if group and 4 * (len(group) + 1) * wider > batch_tokens:
            yield group, rows
            group, rows, wider = [], [], max(len(t) for t, _ in mine)
        group.append(item)
        rows += mine
        width = wider
    if group:
        yield group, rows


@torch.no_grad()
def score_hellaswag(model, items: list[HellaSwagItem], device: str, rank: int = 0, world: int = 1,
                    batch_tokens: int = MAX_BATCH_TOKENS) -> dict:
    """{'acc_norm', 'acc', 'n'} over `items`; ranks split the items and the counts are all-reduced.

    Several items go through one forward pass (up to `batch_tokens` tokens, padding included: the
    logits of that many positions are what it costs in memory), right-padded: attention is causal,
    so a row's padding cannot change its scored positions. The counts stay on the device until the
    end, so the host waits on the device once per call, not once per item."""
    from gpt2train.data.tokenizer import get_encoding

    enc = get_encoding("gpt2")
    block = model.config.block_size if hasattr(model, "config") else model.module.config.block_size
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, device=device)  # correct_norm, correct, n
    for group, rows in item_batches(items[rank::world], enc, block, batch_tokens):
        width = max(len(tokens) for tokens, _ in rows)
        x = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width)
        for i, (tokens, ending) in enumerate(rows):
            x[i, : len(tokens)] = torch.tensor(tokens)
            mask[i, len(tokens) - ending: len(tokens)] = 1
        x, mask = x.to(device), mask[:, 1:].to(device)
        labels = torch.tensor([item.label for item in group], device=device)
        logits, _ = model(x)
        losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), x[:, 1:], reduction="none")  # (4B, W-1)
        summed = (losses * mask).sum(1).view(-1, 4)
        mean = summed / mask.sum(1).view(-1, 4)
        counts[0] += (mean.argmin(1) == labels).sum()
        counts[1] += (summed.argmin(1) == labels).sum()
        counts[2] += len(group)
    if world > 1:
        dist.all_reduce(counts)
    model.train(was_training)
    correct_norm, correct, n = counts.tolist()
    return {"acc_norm": correct_norm / n, "acc": correct / n, "n": int(n)}
