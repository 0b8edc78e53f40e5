"""Hugging Face Hub model ids as weights sources: `hf:openai-community/gpt2` -> a local GPT-2 directory.

    local = hub_model_dir("hf:openai-community/gpt2")          # the cached snapshot's folder
    local = hub_model_dir("hf:openai-community/gpt2@<commit>")  # a pinned revision

`train.init_from`, `gpt2train sample` and `gpt2train eval` accept such an id wherever they take a
Hugging Face GPT-2 directory (gpt2train/weights.py). The files come through huggingface_hub's own
cache (`HF_HUB_CACHE`, default ~/.cache/huggingface/hub), under the same offline rules as the corpus:
with `HF_HUB_OFFLINE=1`, or with no network, a snapshot already in the cache is used and nothing is
fetched; with neither a network nor a cached copy the error says what to do. Only what a GPT-2
directory needs is fetched (the weights as safetensors, the config, the tokenizer), never the
repo's other weight formats (pytorch_model.bin, TF, Flax, ONNX: several times the safetensors).
"""

from __future__ import annotations

from pathlib import Path

from gpt2train.errors import Gpt2TrainError
from gpt2train.layout import HF_CONFIG, HF_WEIGHTS

HUB_PREFIX = "hf:"
MODEL_FILES = [HF_CONFIG, "generation_config.json", HF_WEIGHTS, "tokenizer.json",
               "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"]


def is_hub_model(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith(HUB_PREFIX)


def parse_hub_model(source: str) -> tuple[str, str | None]:
    """`hf:<owner>/<name>[@<revision>]` -> (the repo id, the revision or None); an error if it is not one."""
    repo, _, revision = source[len(HUB_PREFIX):].partition("@")
    if repo.count("/") > 1 or not repo.strip("/") or " " in repo:
        raise Gpt2TrainError(f"{source}: not a Hub model id; write hf:<owner>/<name>[@<revision>], e.g. "
                             f"hf:openai-community/gpt2")
    return repo, revision or None


def hub_model_dir(source: str) -> Path:
    """The local folder of the Hub model `hf:<repo>[@<revision>]` (fetched into the cache if need be)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    repo, revision = parse_hub_model(source)
    try:
        local = Path(snapshot_download(repo, revision=revision, allow_patterns=MODEL_FILES))
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise Gpt2TrainError(f"{source}: the Hub has no such model{' revision' if revision else ''} "
                             f"({type(e).__name__}); check the id, e.g. hf:openai-community/gpt2") from None
    except LocalEntryNotFoundError:
        raise Gpt2TrainError(
            f"{source}: not in the local Hugging Face cache, and the Hub cannot be reached (offline: "
            f"HF_HUB_OFFLINE=1 or no network). Run once where the Hub is reachable (or "
            f"`hf download {repo}` there and copy the cache via HF_HUB_CACHE), or give a local "
            f"save_pretrained directory instead") from None
    if not (local / HF_WEIGHTS).is_file():
        raise Gpt2TrainError(f"{source}: the repo has no {HF_WEIGHTS} (only other weight formats); "
                             f"convert it with save_pretrained(safe_serialization=True) and give that directory")
    return local
