"""Security properties of issue #6, each a test:

1. Nothing loads pickles from files a user might receive: an AST scan of every module (no
   `pickle.load`, `torch.load` only with `weights_only=True`, ...), and malicious pickles placed
   where a checkpoint's optimizer / RNG state or an export's weights go are refused without
   running (their payload would write a marker file; it never appears).
2. Paths from configs cannot escape the data dir: written config paths (`train.out_dir`,
   gpt2train/config.py WRITTEN_PATH_FIELDS), names from the Hub's file listing and its etags,
   corpus partition keys and checkpoint keys, against `..`, absolute paths and symlinks.
3. The UI binds to 127.0.0.1 by default: the real `dagster dev` as the README starts it, its
   listening sockets inspected; the docs never suggest 0.0.0.0 without saying why.
4. No tokens or secrets in logs or lineage: fake HF_TOKEN & co. (and a mirror URL with a
   password) set while the real paths run (Hub download, `prepare`, training with both trackers of
   train.loggers, TensorBoard and offline W&B, and export); every file written and everything
   printed is scanned for them.

    pytest tests/test_security.py                     # the fast ones
    pytest tests/test_security.py -m e2e             # + the real dagster dev
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gpt2train.errors import ConfigError, DataError, Gpt2TrainError
from tests.fixtures.hub import hub_cfg
from tests.paths import EDU_MINI, HELLASWAG, REPO, SHARED
from tests.webserver import free_port

SCANNED_DIRS = ["gpt2train", "assets", "pipelines", "evals", "bench"]


# =============================================================================== 1. no pickles


def _python_files() -> list[Path]:
    files = [p for d in SCANNED_DIRS for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 40, files  # the scan really sees the code
    return files


def _dotted(node: ast.AST) -> str:
    """`torch.serialization.load` for an Attribute chain / Name; '' otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _kw(call: ast.Call, name: str):
    """The keyword's value as a Python constant, `...` when set to a non-constant, None if absent."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else ...
    return None


# Modules whose whole purpose is unpickling (or pickling code): importing one at all is a finding.
UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}


def unsafe_loads(path: Path) -> list[str]:
    """Findings in one module: unpickling calls and imports, and loaders that unpickle unless told not to."""
    tree = ast.parse(path.read_text(), filename=str(path))
    # Local names bound to the risky callables: `from torch import load as tload`, `import numpy as np`.
    alias: dict[str, str] = {}
    findings = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name.split(".")[0] in UNPICKLING_MODULES:
                    findings.append(f"line {node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                alias[a.asname or a.name] = f"{node.module}.{a.name}"
            # `from pickle import UnpicklingError` (to catch torch.load's refusal) unpickles nothing.
            if node.module.split(".")[0] in UNPICKLING_MODULES and not all(a.name.endswith("Error")
                                                                             for a in node.names):
                findings.append(f"line {node.lineno}: from {node.module} import ...")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, rest = name.partition(".")
        full = f"{alias.get(head, head)}.{rest}" if rest else alias.get(head, head)
        where = f"line {node.lineno}: {name}(...)"
        if full in ("torch.load", "torch.serialization.load") and _kw(node, "weights_only") is not True:
            findings.append(f"{where} without weights_only=True")
        elif full in ("numpy.load", "np.load") and _kw(node, "allow_pickle") not in (None, False):
            findings.append(f"{where} with allow_pickle")
        elif full in ("pandas.read_pickle", "pd.read_pickle", "yaml.unsafe_load", "yaml.full_load",
                      "yaml.unsafe_load_all", "torch.package.PackageImporter"):
            findings.append(where)
        elif full in ("yaml.load", "yaml.load_all") and "Safe" not in ast.unparse(node):
            findings.append(f"{where} without a SafeLoader")
        elif node.func and isinstance(node.func, ast.Attribute) and node.func.attr in ("load", "loads") \
                and head in UNPICKLING_MODULES:
            findings.append(where)
    return findings


def test_unsafe_loader_scan_catches_what_it_should(tmp_path):
    """The scanner itself, on code that does each forbidden thing (and the allowed forms)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle, torch, numpy as np, yaml\nimport dill\nfrom torch import load as tl\n"
                   "pickle.loads(b'')\ntorch.load('x')\ntorch.load('x', weights_only=False)\ntl('x')\n"
                   "np.load('x', allow_pickle=True)\nyaml.load(s)\nyaml.unsafe_load(s)\n")
    found = unsafe_loads(bad)
    assert len(found) == 9, found
    good = tmp_path / "good.py"
    good.write_text("import torch, numpy as np, yaml\ntorch.load('x', weights_only=True, map_location='cpu')\n"
                    "np.load('x')\nnp.load('x', allow_pickle=False)\nyaml.safe_load(s)\n"
                    "yaml.load(s, Loader=yaml.SafeLoader)\n")
    assert unsafe_loads(good) == []


def test_no_module_unpickles_files():
    """gpt2train/, assets/, pipelines/, evals/, bench/: torch.load only with weights_only=True, no pickle,
    dill, joblib, shelve or marshal, no np.load(allow_pickle=True), no unsafe YAML loads."""
    findings = {str(p.relative_to(REPO)): f for p in _python_files() if (f := unsafe_loads(p))}
    assert findings == {}


# `from_pretrained` of a *model* unpickles a pytorch_model.bin if one is there and no model.safetensors
# is; `use_safetensors=True` makes transformers refuse instead. Every call of ours passes it.


def test_model_from_pretrained_uses_safetensors():
    found = set()
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "from_pretrained" and "Tokenizer" not in _dotted(node.func) \
                    and _kw(node, "use_safetensors") is not True:
                found.add((str(path.relative_to(REPO)), _dotted(node.func)))
    assert not found, found


class _WritesMarker:
    """Unpickling this runs `touch <marker>`: the proof that a file was unpickled unsafely."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path: Path, marker: Path) -> None:
    torch.save({"state": {0: _WritesMarker(marker)}, "param_groups": []}, path)


def test_the_malicious_pickle_is_live(tmp_path):
    """Control: unpickled the unsafe way, the payload does write its marker (so its absence below means
    the file was refused, not that the payload is broken)."""
    marker = tmp_path / "pwned"
    _malicious(tmp_path / "x.pt", marker)
    torch.load(tmp_path / "x.pt", weights_only=False)  # noqa: the one unsafe load, on purpose
    assert marker.exists()


@pytest.mark.parametrize("name", ["optimizer_rank0.pt", "rng_rank0.pt"])
def test_resuming_from_a_checkpoint_with_a_malicious_pickle_is_refused(name, trained_run, tmp_path, capsys):
    """`gpt2train train` resuming a run whose newest checkpoint carries a payload: refused, never run.
    (tests/test_checkpoint.py tests load_checkpoint alone; this one goes through the trainer.)"""
    from gpt2train.cli import main
    from tests.fixtures.training import RUN_CFG_SETS, RUN_SETS

    data = tmp_path / "data"
    shutil.copytree(trained_run.shards / "shards", data / "shards")
    run = data / "run"  # the same config and shards: the same run, resumed
    shutil.copytree(trained_run.out, run)
    ckpt = sorted((run / "checkpoints").glob("step_*"))[-1]
    marker = tmp_path / "pwned"
    _malicious(ckpt / name, marker)
    sets = [f"data_dir={data}", f"train.out_dir={run}", *RUN_CFG_SETS, *RUN_SETS]
    assert main(["train", "--config", "tiny", *[a for s in sets for a in ("--set", s)]]) == 2  # one line, no traceback
    err = capsys.readouterr().err
    assert f"{ckpt / name} holds objects other than tensors (refused, not unpickled" in err, err
    assert not marker.exists()


def test_export_with_pytorch_model_bin_instead_of_safetensors_is_refused(tiny_export, tmp_path):
    """An export folder whose weights are a (malicious) pytorch_model.bin: the evals runner refuses it
    before any loader sees it, and nothing unpickles it."""
    from evals.runner import evaluate_export
    from gpt2train.config import EvalsConfig

    export = tmp_path / "export"
    shutil.copytree(tiny_export.out_dir, export)
    (export / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"transformer.wte.weight": _WritesMarker(marker)}, export / "pytorch_model.bin")
    with pytest.raises(Gpt2TrainError, match=r"model\.safetensors missing; export the checkpoint again"):
        evaluate_export(export, tmp_path / "report", EvalsConfig(local_data=[f"hellaswag={HELLASWAG}"]))
    assert not marker.exists() and not (tmp_path / "report").exists()


# =============================================================================== 2. paths


def _yaml(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "cfg" / "run.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"data_dir: {tmp_path / 'data'}\n{body}")
    return p


@pytest.mark.parametrize("out_dir", ["../elsewhere", "{tmp}/elsewhere", "{tmp}/data/../elsewhere",
                                     "{tmp}/data/escape/run", "~/gpt2train-out"],
                         ids=["relative-dotdot", "absolute", "dotdot-inside", "symlink", "home"])
def test_written_config_path_outside_data_dir_is_refused(out_dir, tmp_path):
    from gpt2train.config import load_config

    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data" / "escape").symlink_to(tmp_path / "elsewhere")  # inside by name, outside in fact
    cfg = _yaml(tmp_path, f"train:\n  out_dir: {out_dir.format(tmp=tmp_path)}\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: train\.out_dir=.* outside data_dir=.*; a config may only "
                                          r"write under its data_dir"):
        load_config(cfg)
    # The CLI: one line, exit 2, nothing created.
    err = io.StringIO()
    from gpt2train.cli import main

    with contextlib.redirect_stderr(err):
        assert main(["config", "--config", str(cfg)]) == 2
    assert "train.out_dir" in err.getvalue() and not any((tmp_path / "elsewhere").iterdir())


def test_written_config_path_inside_data_dir_and_read_only_paths_elsewhere_are_fine(tmp_path):
    from gpt2train.config import load_config

    # Read-only inputs outside data_dir (the shared corpus mirror, the HellaSwag file, baselines): allowed,
    # with a written path inside it (relative paths resolve against the YAML's folder, cfg/).
    cfg = load_config(_yaml(tmp_path, f"corpus:\n  source: {EDU_MINI}\ntrain:\n  out_dir: ../data/runs/mine\n"
                                      f"  hellaswag_file: {HELLASWAG}\nevals:\n  local_data: [hellaswag={HELLASWAG}]\n"
                                      f"  baselines_file: {SHARED / 'data' / 'published_baselines.json'}\n"))
    assert cfg.train.out_dir == str(tmp_path / "data" / "runs" / "mine")
    assert cfg.corpus.source == str(EDU_MINI.resolve()) and cfg.train.hellaswag_file == str(HELLASWAG.resolve())
    # The tiny preset reads ../shared and writes under its data_dir.
    assert load_config("tiny").train.out_dir is None


def test_out_dir_typed_on_the_command_line_is_the_users_choice(tmp_path):
    """`--set train.out_dir=...` (llm.c's `-o log124M` in docs/training.md) may point anywhere: the user
    typed it. Only a path that came from a config file is held to data_dir."""
    from gpt2train.config import load_config
    from gpt2train.training.llmc import llmc_args_to_overrides

    cfg = load_config("tiny", [f"data_dir={tmp_path / 'data'}", f"train.out_dir={tmp_path / 'elsewhere'}"])
    assert cfg.train.out_dir == str(tmp_path / "elsewhere")
    _, overrides = llmc_args_to_overrides(["-o", str(tmp_path / "log124M")])
    assert load_config("tiny", overrides).train.out_dir == str(tmp_path / "log124M")


@pytest.mark.parametrize("dataset", ["../../x", "/etc", "a/../../b", "a/b/c", "..", "./x"])
def test_corpus_dataset_cannot_climb_out_of_the_download_folder(dataset):
    """corpus.dataset names <data_dir>/corpus/hub/<dataset>: only Hub repo ids."""
    from gpt2train.config import load_config

    with pytest.raises(ConfigError, match=r"corpus\.dataset=.* is not a Hub repo id"):
        load_config("tiny", [f"corpus.dataset={dataset}"])


# --- the Hub: listed names and server-sent etags never leave the download folder ----------------------

@pytest.mark.parametrize("name", ["../../../x.parquet", "/tmp/x.parquet", "sample/10BT/../../../x.parquet",
                                  "sample//x.parquet", "sample\\..\\x.parquet"])
def test_hub_listing_with_an_escaping_name_is_refused(name, hub_server, monkeypatch, tmp_path):
    """A repo (or a mirror at HF_ENDPOINT) whose listing holds `name`: listing fails naming it, before
    any partition or file exists."""
    from gpt2train.data import hub
    from gpt2train.data.corpus import list_source_files
    from tests import hub_server as hs

    real_json = hs._Handler._json

    def evil_json(self, head, status, obj, extra=None):
        if isinstance(obj, list):
            obj = obj + [{"type": "file", "oid": "0" * 40, "size": 10, "path": name}]
        return real_json(self, head, status, obj, extra)

    monkeypatch.setattr(hs._Handler, "_json", evil_json)
    with pytest.raises(DataError, match=re.escape(repr(name)) + r" is not a safe relative path"):
        list_source_files(hub_cfg(tmp_path / "data").corpus)
    assert not (tmp_path / "data").exists()
    with pytest.raises(DataError, match="not a safe relative path"):
        hub.list_hub_files("HuggingFaceFW/fineweb-edu", "sample-10BT", "main")


@pytest.mark.parametrize("key", ["../../../../x.parquet", "/tmp/x.parquet", "sample/../../../x.parquet", ""])
def test_hub_download_of_an_escaping_key_is_refused_before_any_request(key, hub_server, tmp_path):
    """A `corpus_files` partition key is a Hub path for a hub corpus (a key can be added by hand in the UI)."""
    from gpt2train.data.stage import materialize_corpus_file

    with pytest.raises(DataError, match="not a safe relative path"):
        materialize_corpus_file(hub_cfg(tmp_path / "data"), key)
    assert hub_server.requests == [] and not (tmp_path / "data").exists()


def test_hub_download_through_a_symlink_out_of_the_folder_is_refused(hub_server, tmp_path):
    from gpt2train.data import hub

    local = tmp_path / "data" / "corpus" / "hub" / "HuggingFaceFW" / "fineweb-edu"
    local.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (local / "sample").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="outside the download folder"):
        hub.download_hub_file("HuggingFaceFW/fineweb-edu", "sample/10BT/000_00000.parquet", "main", local)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_hub_etag_that_is_a_path_is_refused(hub_server, monkeypatch, tmp_path):
    """The server's ETag names the partial download file: a hostile one (`../../x`) must not place it."""
    from gpt2train.data import hub
    from tests.hub_server import HubServer

    real = HubServer.file_info
    monkeypatch.setattr(HubServer, "file_info", lambda self, path: replace(real(self, path),
                                                                          sha256="../../../../../evil"))
    local = tmp_path / "data" / "corpus" / "hub" / "HuggingFaceFW" / "fineweb-edu"
    before = set(tmp_path.rglob("*"))
    with pytest.raises(DataError, match="etag .* not a plain token"):
        hub.download_hub_file("HuggingFaceFW/fineweb-edu", "sample/10BT/000_00000.parquet", "main", local)
    assert not any("evil" in str(p) for p in set(tmp_path.rglob("*")) - before)


# --- corpus partition keys and checkpoint keys ----------------------------------------------------------


@pytest.mark.parametrize("key", ["../../../etc/passwd", "/etc/passwd", "sample/10BT/../../../x.parquet"])
def test_local_corpus_partition_key_must_be_a_listed_file(key, tmp_path):
    from gpt2train.config import load_config
    from gpt2train.data.stage import materialize_corpus_file

    cfg = load_config("tiny", [f"data_dir={tmp_path / 'data'}", f"corpus.source={EDU_MINI}"])
    with pytest.raises(DataError, match=r"is not a file under corpus\.source"):
        materialize_corpus_file(cfg, key)
    assert not (tmp_path / "data").exists()


def test_partition_tag_is_one_safe_file_name():
    """Records and manifests are named by partition_tag(key): never a path, whatever the key."""
    from gpt2train.layout import partition_tag

    for key in ["../../x.parquet", "/etc/x", "a/../../..", "..", "x\\..\\y", "\0"]:
        tag = partition_tag(key)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", tag) and tag not in (".", ".."), (key, tag)


@pytest.mark.parametrize("key", ["../x@step_00000001", "..@step_00000001", "/abs@step_00000001",
                                 "a/../..@step_00000001", ".hidden@step_00000001", "run@../step_00000001",
                                 "run@step_1", "run@step_00000001/../..", "@step_00000001", "run"])
def test_checkpoint_key_with_traversal_is_refused(key, tmp_path):
    """checkpoint_path (gpt2train/layout.py) turns a `checkpoints` partition key into the directory the
    hf_export and eval_report assets read, and it names their output folders too."""
    from gpt2train.layout import checkpoint_path

    with pytest.raises(Gpt2TrainError, match="is not a checkpoint key"):
        checkpoint_path(tmp_path, key)


def test_checkpoint_key_stays_inside_runs_root(tmp_path):
    from gpt2train.layout import checkpoint_path

    p = checkpoint_path(tmp_path, "tiny-0123456789@step_00000040")
    assert p == tmp_path / "runs" / "tiny-0123456789" / "checkpoints" / "step_00000040"


def test_checkpoint_key_with_a_trailing_newline_is_refused(tmp_path):
    from gpt2train.layout import checkpoint_path

    with pytest.raises(Gpt2TrainError):
        checkpoint_path(tmp_path, "run@step_00000001\n")


# =============================================================================== 3. servers bind 127.0.0.1


def test_docs_never_tell_users_to_bind_all_interfaces_without_a_warning():
    """README and docs: no 0.0.0.0 in the README; in docs/, every 0.0.0.0 has 127.0.0.1 (the default and
    what to use outside a container) within a few lines."""
    readme = (REPO / "README.md").read_text()
    assert "0.0.0.0" not in readme
    assert re.search(r"dagster dev -w workspace\.yaml\s.*http://127\.0\.0\.1:3000", readme)
    for doc in sorted((REPO / "docs").glob("*.md")):
        lines = doc.read_text().splitlines()
        for i, line in enumerate(lines):
            if "0.0.0.0" in line:
                window = "\n".join(lines[max(0, i - 3): i + 8])
                assert "127.0.0.1" in window, f"{doc.name}:{i + 1} binds 0.0.0.0 with no word on 127.0.0.1"


def _listening(pids: set[int]) -> list[tuple[int, str, int]]:
    import psutil

    out = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out += [(pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


@pytest.mark.e2e
def test_dagster_dev_as_the_readme_starts_it_listens_on_loopback_only(chain_ui):
    """`dagster dev -w workspace.yaml` (README), no -h (tests/webserver.py starts it so for the UI tests): the
    webserver, and every other socket the process tree listens on (code server, daemon), is on 127.0.0.1 / ::1."""
    import psutil

    server, _ = chain_ui
    port = int(server.url.rsplit(":", 1)[1])
    tree = {server.proc.pid} | {c.pid for c in psutil.Process(server.proc.pid).children(recursive=True)}
    sockets = _listening(tree)
    assert any(p == port for _, _, p in sockets), (sockets, server.log_tail())
    exposed = [s for s in sockets if s[1] not in ("127.0.0.1", "::1")]
    assert exposed == [], f"listening beyond loopback: {exposed}"


# =============================================================================== 4. no secrets


SECRETS = {
    "HF_TOKEN": "hf_FAKEsecretTOKEN4issue6aaaaaaaaaaaaaaa",
    "HUGGING_FACE_HUB_TOKEN": "hf_FAKElegacyTOKEN4issue6bbbbbbbbbbbbb",
    "WANDB_API_KEY": "FAKEwandbKEY4issue6cccccccccccccccccccccc",
    "DAGSTER_PG_PASSWORD": "FAKEpgPASSWORD4issue6ddddd",
}
URL_PASSWORD = "FAKEmirrorPASSWORD4issue6eeee"  # in HF_ENDPOINT's user-info: https://user:PASSWORD@mirror


TRAIN_SETS = [a for kv in ("train.max_steps=1", "train.total_batch_tokens=256", "train.val_every=1",
                           "train.val_batches=1", "train.hellaswag_every=0", "train.sample_tokens=8")
              for a in ("--set", kv)]


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory):  # e2e: the local Hub, training with both trackers, an export
    """The cheap real paths, with fake secrets in the environment: `gpt2train prepare --source hub`
    (listing + resumable download from the local Hub, through a mirror URL with a password), a step of
    tiny training with its val loss, sample and checkpoint, and `gpt2train export`. Returns the
    folders and everything printed or logged."""
    import huggingface_hub.file_download as file_download
    import huggingface_hub.utils._http as hf_http
    from huggingface_hub import close_session, constants

    from gpt2train.cli import main
    from tests.hub_server import HubServer
    from tests.fixtures.hub import TimeWithoutSleep

    root = tmp_path_factory.mktemp("secrets")
    data = root / "data"
    server = HubServer(EDU_MINI).start()
    log_stream = io.StringIO()
    handler = logging.StreamHandler(log_stream)
    logging.getLogger().addHandler(handler)
    out, err = io.StringIO(), io.StringIO()
    try:
        with pytest.MonkeyPatch.context() as mp:
            home = root / "hf-home"
            mp.setenv("HF_HOME", str(home))
            for name in ("HF_HOME", "HF_HUB_CACHE", "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH"):
                mp.setattr(constants, name, str(home / name.lower()))
            mp.setattr(constants, "HF_HUB_OFFLINE", False)
            # The unreachable Hub below: huggingface_hub's retries happen, without their 23 s of sleeps.
            mp.setattr(file_download, "time", TimeWithoutSleep())
            mp.setattr(hf_http, "time", TimeWithoutSleep())
            for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # huggingface_hub reads either as offline
                mp.delenv(name, raising=False)
            for k, v in SECRETS.items():
                mp.setenv(k, v)
            mp.setenv("HF_ENDPOINT", server.url.replace("http://", f"http://mirror-user:{URL_PASSWORD}@"))
            # train.loggers' W&B offline, with every folder it writes (settings, cache, its own logs) under
            # root, so that those files are scanned too (the run's wandb/ and tensorboard/ are in the run).
            mp.setenv("WANDB_MODE", "offline")
            for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
                mp.setenv(name, str(root / name.lower()))
            close_session()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                assert main(["-q", "prepare", "--source", "hub", "--files", "1", "--documents", "12",
                             "--shard-size", "5000", "--out", str(data / "shards")]) == 0, err.getvalue()
                # One step of one micro-batch (a CPU backward through the 50304-token head is ~1 s).
                train_argv = ["train", "--config", "tiny", *TRAIN_SETS, "--set", f"data_dir={data}",
                              "--set", "train.loggers=[tensorboard,wandb]"]
                assert main(train_argv) == 0, err.getvalue()
                (run,) = [p for p in (data / "runs").iterdir() if p.is_dir()]  # runs/<run tag>
                ckpt = sorted((run / "checkpoints").glob("step_*"))[-1]
                assert main(["export", str(ckpt), str(data / "exports" / "tiny-1")]) == 0, err.getvalue()
                # A Hub that cannot be reached (a port nothing listens on): the error, which quotes
                # the endpoint, is printed too.
                mp.setenv("HF_ENDPOINT", f"http://mirror-user:{URL_PASSWORD}@127.0.0.1:{free_port()}")
                assert main(["-q", "prepare", "--source", "hub", "--files", "1",
                             "--out", str(root / "unreachable" / "shards")]) == 2
            close_session()
    finally:
        logging.getLogger().removeHandler(handler)
        server.stop()
    return {"root": root, "data": data, "run": run, "export": data / "exports" / "tiny-1",
            "printed": out.getvalue() + err.getvalue() + log_stream.getvalue(), "requests": server.requests}


@pytest.mark.e2e
def test_no_secret_in_any_file_written_or_line_printed(secret_run):
    root, printed = secret_run["root"], secret_run["printed"]
    files = [p for p in root.rglob("*") if p.is_file() and "hf-home" not in p.parts]
    names = {p.name for p in files}
    # The paths really ran: a Hub download with its metadata, shards, a checkpoint, an export, logs.
    assert {"000_00000.parquet", "edu_fineweb_val_000000.bin", "state.json", "main.log", "metrics.jsonl",
            "lineage.json", "README.md", "model.safetensors"} <= names, sorted(names)
    assert any(p.suffix == ".metadata" for p in files) and "cannot reach the Hugging Face Hub" in printed
    # ...and the trackers wrote theirs: TensorBoard's event file, W&B's offline run and its logs.
    assert "tracking.json" in names and any(n.startswith("events.out.tfevents.") for n in names)
    assert any(p.suffix == ".wandb" for p in files) and "debug-internal.log" in names, sorted(names)
    assert any(r.path.startswith("/datasets/") for r in secret_run["requests"])
    needles = [*SECRETS.values(), URL_PASSWORD]
    leaks = [f"{p.relative_to(root)}: {s[:12]}…" for p in files for s in needles if s.encode() in p.read_bytes()]
    leaks += [f"printed/logged: {s[:12]}…" for s in needles if s in printed]
    assert leaks == []
    assert "http://***@127.0.0.1:" in printed  # the mirror's credentials masked where its URL is quoted
