"""Where a config comes from and what its paths mean: the shipped presets, and relative paths made absolute.

    preset_path("tiny")                     # gpt2train/configs/tiny.yaml, package data
    resolve_paths(cfg, base=Path.cwd())     # every path field of a loaded config, absolute

A relative path means the folder `gpt2train/config.py`'s load_config says: a YAML file's own folder for
a file of the user's, the working directory for a shipped preset and for `--set`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpt2train.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"
"""The shipped presets, package data: present in a wheel and in an editable install alike."""
REPO_ROOT = PACKAGE_DIR.parent
"""The source checkout in a clone or an editable install; site-packages when installed from a wheel."""

# Fields holding filesystem paths.
PATH_FIELDS = {("data_dir",), ("corpus", "source"), ("train", "out_dir"), ("train", "train_glob"),
               ("train", "val_glob"), ("train", "hellaswag_file"), ("train", "init_from"),
               ("evals", "baselines_file")}
# `task=PATH` lists: the PATH part is resolved the same way.
TASK_PATH_LIST_FIELDS = {("evals", "local_data")}
# Lists of paths: each item resolved the same way.
PATH_LIST_FIELDS = {("evals", "reference_reports")}


def shipped_presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def preset_path(name_or_path: str | Path) -> Path:
    """`tiny` -> the shipped gpt2train/configs/tiny.yaml; anything with a suffix or a slash is taken as a path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        return p
    return CONFIG_DIR / f"{p}.yaml"


def is_shipped_preset(path: Path) -> bool:
    return path.resolve().parent == CONFIG_DIR.resolve()


def resolve_field(field: tuple[str, ...], value: Any, base: Path, where: str) -> Any:
    """`value` of the config field `field` (("train", "out_dir"), ...) with its relative paths made
    absolute against `base`; a field that holds no path comes back as it is."""
    if field in PATH_FIELDS and is_local_path(value):
        return str((base / Path(value).expanduser()).resolve())
    if field in TASK_PATH_LIST_FIELDS and value:
        return [_resolve_task_path(v, base, where) for v in value]
    if field in PATH_LIST_FIELDS and value:
        return [str((base / Path(v).expanduser()).resolve()) for v in value]
    return value


def resolve_paths(cfg: Any, base: Path) -> None:
    """Every path field of `cfg` made absolute against `base`, in place."""
    for field in PATH_FIELDS | TASK_PATH_LIST_FIELDS | PATH_LIST_FIELDS:
        *sections, name = field
        obj = cfg
        for section in sections:
            obj = getattr(obj, section)
        setattr(obj, name, resolve_field(field, getattr(obj, name), base, where=".".join(field)))


def is_local_path(value: str | None) -> bool:
    """A path field's value names a local path, not `hub` or a URL. Nor `hf-dataset:...`: `datasets`
    takes a folder there as it is (relative: to the working directory); nor a Hub model id
    `hf:<owner>/<name>` (train.init_from: gpt2train/hub_models.py)."""
    return value is not None and value != "hub" and not is_url(value) and not value.startswith(("hf-dataset:", "hf:"))


def is_url(value: str) -> bool:
    return value.startswith(("https://", "http://"))


def _resolve_task_path(item: str, base: Path, where: str) -> str:
    task, sep, value = item.partition("=")
    if not sep or not task.strip() or not value.strip():
        raise ConfigError(f"{where}: {item!r} is not `task=PATH` (e.g. hellaswag=data/hellaswag_val.jsonl)")
    return f"{task.strip()}={(base / Path(value.strip()).expanduser()).resolve()}"
