"""Staleness decisions at scale: 1,000 corpus partitions and 150 checkpoint partitions against 10 of each.

    python bench/scale.py                 # 10 and 1,000 corpus files, 10 and 150 checkpoints (~4 min)
    python bench/scale.py --files 10,100 --checkpoints 10,50

For each size, in a fresh data dir and DAGSTER_HOME, it builds what a finished chain leaves behind,
then times what a user waits for when nothing has changed:

- `gpt2train pipeline --stale-only` deciding that nothing is stale (every stage asked, nothing run:
  the tiny training run is complete);
- one tick of each sensor (`corpus_files_sensor`, `checkpoints_sensor`, `stale_partitions_sensor`: its
  first tick records each check's result, the next ones find them unchanged);
- the UI's asset-graph GraphQL query (every asset node with its stale status), through Dagster's
  own GraphQL schema and a real code server over the same instance, as the webserver answers it.
Each is the median of 3.

How the history is made (`build`): tiny generated parquet files (3 short documents each) go through
the library's own data stage, and each partition's `corpus` and `token_shards` materializations are
recorded with the data versions and provenance tags a Dagster run records (`record_materialization`:
the same tags, written by Dagster's own helpers), so 1,000 partitions take a minute, not the ~20
a run per partition would take here; one real tiny training run; checkpoints as complete checkpoint
directories (state.json + DONE, a stand-in weights file), with their `hf_export` and `eval_report`
materializations recorded the same way. tests/test_scale.py uses the same builder for the
staleness matrix at 150 files.

Goal: `--stale-only` decides in <= 10 s at 1,000 partitions, and no figure grows faster than linearly.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
SHARED = Path(os.environ.get("GPT2TRAIN_SHARED", REPO.parent / "shared"))
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken"))
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

import dagster as dg  # noqa: E402


def write_corpus(src: Path, n: int, start: int = 0) -> list[str]:
    """n tiny parquet files with the Hub's layout, `sample/10BT/NNNN_00000.parquet`; returns their keys."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = src / "sample" / "10BT"
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for i in range(start, start + n):
        name = f"{i:04d}_00000.parquet"
        pq.write_table(pa.table({"text": [f"File {i}, document {j}: " + "tokens of text " * 12 for j in range(3)]}),
                       folder / name)
        keys.append(f"sample/10BT/{name}")
    return keys


def scale_sets(root: Path, *sets: str) -> list[str]:
    """The `tiny` preset on the generated corpus, with a 2-step training run of a minute."""
    return [f"data_dir={root / 'data'}", f"corpus.source={root / 'src'}", "shards.shard_size=400", "train.batch_size=2",
            "train.seq_len=16", "train.total_batch_tokens=32", "train.max_steps=2", "train.val_every=0",
            "train.hellaswag_every=0", "train.sample_every=0", "train.checkpoint_every=0", *sets]


def scale_cfg(root: Path, *sets: str):
    from gpt2train.config import load_config

    return load_config("tiny", scale_sets(root, *sets))


def record_materialization(instance: dg.DagsterInstance, asset: str, partition: str | None, data_version: str,
                           code_version: str, inputs: dict[str, tuple[str, int | None]]) -> int:
    """Record what a run's materialization of (asset, partition) records: its data version, code version
    and each input's data version and event pointer (Dagster's own tag builders). Returns its storage id."""
    from dagster._core.definitions.data_version import (
        CODE_VERSION_TAG, DATA_VERSION_IS_USER_PROVIDED_TAG, DATA_VERSION_TAG, get_input_data_version_tag,
        get_input_event_pointer_tag,
    )

    tags = {CODE_VERSION_TAG: code_version, DATA_VERSION_TAG: data_version, DATA_VERSION_IS_USER_PROVIDED_TAG: "true"}
    for upstream, (version, storage_id) in inputs.items():
        tags[get_input_data_version_tag(dg.AssetKey(upstream))] = version
        tags[get_input_event_pointer_tag(dg.AssetKey(upstream))] = str(storage_id) if storage_id else "NULL"
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition, tags=tags))
    flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None)
    return instance.fetch_materializations(flt, limit=1).records[0].storage_id


def build_data(cfg, instance: dg.DagsterInstance, keys: list[str]) -> None:
    """The data stage for `keys` through the library, each partition recorded as its run would record it."""
    from assets.partitions import corpus_files
    from gpt2train.data.stage import corpus_code_version, corpus_data_version, materialize_corpus_file, \
        materialize_token_shards
    from gpt2train.data.shard_writer import shards_code_version

    instance.add_dynamic_partitions(corpus_files.name, keys)
    for key in keys:
        record = materialize_corpus_file(cfg, key)
        corpus_version = corpus_data_version(record, cfg)
        corpus_id = record_materialization(instance, "corpus", key, corpus_version, corpus_code_version(cfg), {})
        manifest = materialize_token_shards(cfg, key, progress=False)
        record_materialization(instance, "token_shards", key, manifest["data_version"], shards_code_version(cfg),
                               {"corpus": (corpus_version, corpus_id)})


def build_checkpoints(cfg, instance: dg.DagsterInstance, n: int) -> list[str]:
    """n complete checkpoint directories of one run (state.json, DONE, a stand-in weights file) registered
    as partitions, each with `hf_export` and `eval_report` recorded as their runs record them."""
    from assets.checkpoints import register_checkpoints
    from assets.hf_export import export_data_version
    from evals.tasks import evals_code_version
    from gpt2train.training.checkpoint import DONE
    from gpt2train.export.hf_export import export_code_version
    from gpt2train.fileio import sha256_file
    from gpt2train.training.runs import find_checkpoints

    run = Path(cfg.data_dir) / "runs" / "tiny-scale00000"
    for i in range(1, n + 1):
        step = run / "checkpoints" / f"step_{i:08d}"
        step.mkdir(parents=True)
        (step / "model.safetensors").write_bytes(f"stand-in weights {i}".encode())
        (step / "state.json").write_text(json.dumps({"step": i, "model_sha256": sha256_file(step / "model.safetensors"),
                                                     "lineage": {"run_tag": run.name}}))
        (step / DONE).write_text("")
    infos = find_checkpoints(run.parent)
    register_checkpoints(instance, infos)
    # What a run records as its input pointer: the upstream asset's newest materialization, any partition.
    ckpt_id = instance.fetch_materializations(dg.AssetKey("checkpoint"), limit=1).records[0].storage_id
    for info in infos:
        export_version = export_data_version({"model.safetensors": info.model_sha256})
        export_id = record_materialization(instance, "hf_export", info.key, export_version, export_code_version(),
                                           {"checkpoint": (info.model_sha256, ckpt_id)})
        # A stand-in export on disk too: `--stale-only` skips a fresh export only if its sidecar is there.
        export = Path(cfg.data_dir) / "exports" / info.key
        export.mkdir(parents=True)
        (export / "lineage.json").write_text(json.dumps({"artifact": "hf_export", "files": {}}))
        report = Path(cfg.data_dir) / "reports" / info.key
        report.mkdir(parents=True)
        metrics = {"hellaswag": {"acc": 0.25}}
        (report / "lineage.json").write_text(json.dumps({"artifact": "eval_report", "step": info.step,
                                                         "checkpoint": {"key": info.key, "run_tag": info.run_tag},
                                                         "metrics": metrics}))
        record_materialization(instance, "eval_report", info.key, f"scores-{info.step}", evals_code_version(cfg.evals),
                               {"hf_export": (export_version, export_id)})
    return [i.key for i in infos]


def build(root: Path, instance: dg.DagsterInstance, files: int, checkpoints: int, *sets: str):
    """A finished chain at this scale: data, one tiny training run, `checkpoints` scored checkpoints."""
    from pipelines.runner import run_pipeline

    keys = write_corpus(root / "src", files)
    cfg = scale_cfg(root, *sets)
    build_data(cfg, instance, keys)
    run_pipeline(cfg, instance, stale_only=True, through="training")  # records shard_manifest, trains for real
    build_checkpoints(cfg, instance, checkpoints)
    run_pipeline(cfg, instance, stale_only=True)  # records report_manifest, draws eval_summary
    return cfg


ASSET_GRAPH_QUERY = """{ assetNodes { assetKey { path } isMaterializable staleStatus
    staleCauses { key { path } reason } } }"""


def ui_env(cfg_sets: list[str]) -> dict[str, str]:
    """What the code location reads to build the same Definitions (pipelines/settings.py)."""
    return {"GPT2TRAIN_CONFIG": "tiny", "GPT2TRAIN_SET": ";".join(cfg_sets)}


class UiWorkspace:
    """The webserver's view of the code location: a managed gRPC code server for pipelines/definitions.py
    (started once, outside any timing) and Dagster's own GraphQL schema over the same instance."""

    def __init__(self, instance: dg.DagsterInstance):
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import PythonFileTarget

        target = PythonFileTarget(python_file=str(REPO / "pipelines" / "definitions.py"), attribute="defs",
                                  working_directory=str(REPO), location_name="gpt2train")
        self._process = WorkspaceProcessContext(instance, target)

    def query(self, text: str) -> dict:
        from dagster_graphql.test.utils import execute_dagster_graphql

        result = execute_dagster_graphql(self._process.create_request_context(), text)
        if result.errors:
            raise RuntimeError(result.errors)
        return result.data

    def __enter__(self) -> "UiWorkspace":
        self._process.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._process.__exit__(*exc)


def _median_seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_decisions(root: Path, instance: dg.DagsterInstance, cfg) -> dict[str, float]:
    """Median of 3 of each figure, the chain unchanged (anything found stale is an error)."""
    from pipelines.definitions import build_definitions
    from pipelines.runner import run_pipeline

    def stale_only():
        if run_pipeline(cfg, instance, stale_only=True).ran:
            raise RuntimeError("--stale-only ran something in an unchanged chain")

    out = {"stale-only, nothing stale": _median_seconds(stale_only)}
    defs = build_definitions(cfg)
    for name in ("corpus_files_sensor", "checkpoints_sensor", "stale_partitions_sensor"):
        sensor = defs.resolve_sensor_def(name)
        out[f"one {name} tick"] = _median_seconds(lambda: sensor(dg.build_sensor_context(instance=instance)))
    os.environ.update(ui_env(scale_sets(root)))
    with UiWorkspace(instance) as ui:
        data = ui.query(ASSET_GRAPH_QUERY)  # warms the code server's caches, as a browser's first load does
        stale = [n["assetKey"]["path"] for n in data["assetNodes"] if n["staleStatus"] not in (None, "FRESH")]
        if stale:
            raise RuntimeError(f"the UI marks {stale} stale in an unchanged chain")
        out["UI asset-graph query"] = _median_seconds(lambda: ui.query(ASSET_GRAPH_QUERY))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="10,1000", help="corpus partitions, small and large")
    ap.add_argument("--checkpoints", default="10,150", help="checkpoint partitions, small and large")
    args = ap.parse_args()
    sizes = list(zip(map(int, args.files.split(",")), map(int, args.checkpoints.split(","))))
    results = {}
    for files, checkpoints in sizes:
        with tempfile.TemporaryDirectory(prefix=f"scale-{files}-") as tmp:
            root = Path(tmp)
            (root / "home").mkdir()
            with dg.DagsterInstance.local_temp(str(root / "home")) as instance:
                t0 = time.perf_counter()
                cfg = build(root, instance, files, checkpoints)
                print(f"built {files} corpus partitions and {checkpoints} checkpoints in "
                      f"{time.perf_counter() - t0:.0f} s", flush=True)
                results[(files, checkpoints)] = time_decisions(root, instance, cfg)
    (small, small_c), (large, large_c) = sizes
    print(f"\n{'':34}{f'{small} files, {small_c} ckpts':>22}{f'{large} files, {large_c} ckpts':>24}"
          f"{'time ratio':>12}  (files x{large / small:.0f}, checkpoints x{large_c / small_c:.0f})")
    for name in results[sizes[0]]:
        a, b = results[sizes[0]][name], results[sizes[1]][name]
        print(f"{name:34}{a:>20.2f} s{b:>22.2f} s{b / a:>12.1f}")
    goal = results[sizes[1]]["stale-only, nothing stale"]
    print(f"\n--stale-only at {large} partitions: {goal:.1f} s (goal <= 10 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
