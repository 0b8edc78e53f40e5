"""What a corpus is, as corpus records, the `corpus` asset's metadata and eval reports name it.

    corpus_identity(cfg.corpus, ["sample/10BT/000_00000.parquet"]).label
    # 'HuggingFaceFW/fineweb-edu sample-10BT (local mirror ../shared/data/edu-mini)'

`corpus.dataset` and `corpus.name` default to FineWeb-Edu's sample-10BT for every source, so a record
cannot name the dataset from the config alone: a folder of the user's own files would be labeled
FineWeb-Edu, and its val loss set beside GPT-2's FineWeb-Edu figure. A corpus is the Hub dataset
`corpus.dataset` (config `corpus.name`) when it is downloaded from the Hub (`source: hub`), or when it is
a local mirror of it: a folder (or glob) whose files lie where the Hub's dataset keeps that config's
files, as .parquet (`sample/10BT/*.parquet` for sample-10BT; ../shared/data/edu-mini is laid out so).
That layout is the declaration: copying the Hub's folder gives it, and a folder of other files does not
have it by accident. Anything else is labeled by its path. An `hf-dataset:` source is the Hub dataset it
streams (a local dataset folder: its path).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from gpt2train.config import CorpusConfig
from gpt2train.data import hf_dataset, hub
from gpt2train.errors import DataError


@dataclass(frozen=True)
class CorpusIdentity:
    """What a corpus (or one source file of it) is, as records and reports name it."""

    label: str                 # e.g. "HuggingFaceFW/fineweb-edu sample-10BT (local mirror ../shared/data/edu-mini)"
    dataset: str | None        # the Hub dataset it is a copy of; None: files of the user's own
    config: str | None         # that dataset's config, where it has one
    why: str                   # how that was decided, in words

    def to_dict(self) -> dict:
        return asdict(self)


def corpus_identity(cfg: CorpusConfig, keys: list[str]) -> CorpusIdentity:
    """What the source files `keys` (partition keys) of corpus `cfg` are (see the comment above)."""
    if hf_dataset.is_dataset_source(cfg.source):
        src = hf_dataset.parse_source(cfg.source)
        if src.local:
            return CorpusIdentity(f"local dataset folder {src.repo}", None, None,
                                  "an hf-dataset: source read from a local folder, not from the Hub")
        return CorpusIdentity(f"{src.shown} (Hugging Face Hub, streamed)", src.repo, src.config,
                              "an hf-dataset: source streamed from the Hub")
    if cfg.source == "hub":
        return CorpusIdentity(f"{cfg.dataset} {cfg.name} (Hugging Face Hub)", cfg.dataset, cfg.name,
                              "corpus.source is hub: downloaded from the Hub")
    layout = _hub_layout(cfg.name)
    if layout and keys and all(k.startswith(layout + "/") and k.endswith(".parquet") for k in keys):
        return CorpusIdentity(f"{cfg.dataset} {cfg.name} (local mirror {cfg.source})", cfg.dataset, cfg.name,
                              f"a local mirror: its files lie where the Hub's dataset keeps {cfg.name} "
                              f"({layout}/*.parquet)")
    where = f"{layout}/*.parquet" if layout else f"the folder of a FineWeb config (corpus.name={cfg.name!r} is none)"
    return CorpusIdentity(f"local files {cfg.source}", None, None,
                          f"local files not laid out as a mirror of {cfg.dataset} {cfg.name} ({where}), so not "
                          f"labeled as it")


def recorded_corpus_identity(corpus: dict, keys: list[str]) -> CorpusIdentity | None:
    """corpus_identity of a config's `corpus` section as a record holds it (a checkpoint's state.json);
    None when the record has none. Settings it lacks take their defaults; ones it has that CorpusConfig no
    longer has are ignored."""
    if not isinstance(corpus, dict) or "source" not in corpus:
        return None
    known = {k: v for k, v in corpus.items() if k in CorpusConfig.__dataclass_fields__}
    return corpus_identity(CorpusConfig(**known), keys)


def checkpoint_corpus_identity(state: dict) -> CorpusIdentity | None:
    """What a checkpoint's val tokens are, from its state.json `state`: the run's corpus settings and the
    source files of its val shards (of its train shards when it had none). None where it records no corpus."""
    run = state.get("lineage") or {}
    shards = run.get("val_shards") or run.get("train_shards") or []
    keys = [k for s in shards for k in s.get("sources") or [] if isinstance(k, str)]
    return recorded_corpus_identity((state.get("config") or {}).get("corpus"), keys)


def _hub_layout(name: str) -> str | None:
    try:
        return hub.config_subdir(name)
    except DataError:  # not a FineWeb config name
        return None
