"""The data stage through Dagster's own API: definitions, partitions, checks, staleness.

Every test uses a real SQLite-backed instance in a temp DAGSTER_HOME (what `dagster dev`
and `gpt2train pipeline` use), and the real assets over the edu-mini mirror. The tests that
materialize (a data run of 2 files each, in this process) are end-to-end (`e2e`).
"""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest

from gpt2train.config import load_config
from gpt2train.data.stage import corpus_data_version, load_corpus_record
from gpt2train.errors import Gpt2TrainError
from gpt2train.fileio import sha256_file
from gpt2train.layout import shard_partition_manifest as manifest_path
from pipelines.definitions import DATA_JOB, SHARD_CHECKS_JOB, build_definitions
from pipelines.runner import run_pipeline, run_shard_checks
from pipelines.staleness import StaleStatus, stale_statuses


def make_cfg(tmp_path, source, *overrides):
    return load_config("tiny", [f"data_dir={tmp_path / 'data'}", f"corpus.source={source}",
                                "corpus.max_documents_per_file=40", "shards.shard_size=50000", *overrides])


def latest_materialization(instance, asset: str, partition: str):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1).records
    return records[0].asset_materialization if records else None


def statuses_by_asset(defs, instance, keys):
    out: dict[str, set] = {}
    fast = stale_statuses(defs, instance, assets=["corpus", "token_shards"], partition_keys=keys)
    assert fast == stale_statuses(defs, instance, assets=["corpus", "token_shards"], partition_keys=keys, bulk=False)
    for (asset, _key), status in fast.items():
        out.setdefault(asset, set()).add(status)
    return out


def test_definitions_load(tiny_cfg):
    defs = build_definitions(tiny_cfg)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "corpus", "token_shards", "shard_manifest", "training_run", "checkpoint", "hf_export", "eval_report",
        "report_manifest", "eval_summary"}
    parents = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
               for k in graph.get_all_asset_keys()}
    assert parents == {"corpus": set(), "token_shards": {"corpus"}, "shard_manifest": {"token_shards"},
                       "training_run": {"shard_manifest"}, "checkpoint": {"training_run"},
                       "hf_export": {"checkpoint"}, "eval_report": {"hf_export"},
                       "report_manifest": {"eval_report"}, "eval_summary": {"report_manifest"}}
    for external in ("shard_manifest", "checkpoint", "report_manifest"):  # recorded, never recomputed
        assert not graph.get(dg.AssetKey(external)).is_materializable
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert checks == {("token_shards", n) for n in ("header", "size_matches_header", "tokens_in_vocab",
                                                    "sha256_matches_sidecar")} | \
        {(a, "stale_partitions") for a in ("corpus", "token_shards", "hf_export", "eval_report")}
    assert defs.resolve_job_def(DATA_JOB) and defs.resolve_job_def(SHARD_CHECKS_JOB)
    assert defs.resolve_sensor_def("corpus_files_sensor") and defs.resolve_sensor_def("checkpoints_sensor")
    assert defs.resolve_sensor_def("stale_partitions_sensor")
    # The module the workspace loads builds too (default config: tiny).
    from pipelines.definitions import defs as lazy_defs

    assert lazy_defs().resolve_asset_graph().get_all_asset_keys() == graph.get_all_asset_keys()


def test_code_versions_follow_the_settings_that_shape_output(tmp_path, edu_mini):
    def versions(*overrides):
        g = build_definitions(make_cfg(tmp_path, edu_mini, *overrides)).resolve_asset_graph()
        return g.get(dg.AssetKey("corpus")).code_version, g.get(dg.AssetKey("token_shards")).code_version

    base = versions()
    assert versions("shards.shard_size=60000") == (base[0], versions("shards.shard_size=60000")[1]) != base
    assert versions("corpus.text_field=body")[0] != base[0]
    assert versions("corpus.revision=abc123")[0] != base[0]
    # selection and speed knobs change nothing
    assert versions("corpus.files=1", "shards.threads=1", "shards.batch_documents=3") == base


@pytest.mark.e2e
def test_materialize_then_change_shard_size_makes_only_shards_stale(tmp_path, small_corpus, instance):
    cfg = make_cfg(tmp_path, small_corpus)
    summary = run_pipeline(cfg, instance, through="data")
    keys = ["sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet"]
    assert sorted(k for _, k in summary.ran) == sorted(keys * 2)
    assert statuses_by_asset(build_definitions(cfg), instance, keys) == {
        "corpus": {StaleStatus.FRESH}, "token_shards": {StaleStatus.FRESH}}

    # Metadata and data versions are recorded as Dagster sees them.
    meta = latest_materialization(instance, "token_shards", keys[0]).metadata
    assert meta["tokens"].value > 0 and meta["holds_val_shard"].value is True
    corpus = latest_materialization(instance, "corpus", keys[0])
    assert corpus.metadata["sha256"].value == sha256_file(small_corpus / keys[0])
    assert corpus.tags["dagster/data_version"] == corpus_data_version(
        load_corpus_record(cfg, keys[0]), cfg)

    changed = make_cfg(tmp_path, small_corpus, "shards.shard_size=70000")
    assert statuses_by_asset(build_definitions(changed), instance, keys) == {
        "corpus": {StaleStatus.FRESH}, "token_shards": {StaleStatus.STALE}}

    summary = run_pipeline(changed, instance, stale_only=True, through="data")
    assert sorted(summary.ran) == [("token_shards", k) for k in keys]
    assert sorted(summary.skipped) == [("corpus", k) for k in keys]
    assert statuses_by_asset(build_definitions(changed), instance, keys) == {
        "corpus": {StaleStatus.FRESH}, "token_shards": {StaleStatus.FRESH}}

    # Nothing changed: nothing runs.
    summary = run_pipeline(changed, instance, stale_only=True, through="data")
    assert summary.ran == [] and len(summary.skipped) == 4


@pytest.mark.e2e
def test_new_source_file_adds_only_its_partition(tmp_path, small_corpus, edu_mini, instance):
    cfg = make_cfg(tmp_path, small_corpus)
    run_pipeline(cfg, instance, through="data")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data" / "shards").glob("*.bin")}

    new = "sample/10BT/002_00000.parquet"
    shutil.copyfile(edu_mini / new, small_corpus / new)
    summary = run_pipeline(cfg, instance, stale_only=True, through="data")
    assert summary.ran == [("corpus", new), ("token_shards", new)]
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data" / "shards").glob("*.bin")}
    assert {k: after[k] for k in before} == before  # earlier shards untouched
    assert any("002_00000" in name for name in set(after) - set(before))
    assert set(instance.get_dynamic_partitions("corpus_files")) == {
        "sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet", new}


@pytest.mark.e2e
def test_changed_source_file_reruns_only_its_partition(tmp_path, small_corpus, edu_mini, instance):
    cfg = make_cfg(tmp_path, small_corpus)
    run_pipeline(cfg, instance, through="data")
    changed = "sample/10BT/001_00000.parquet"
    shutil.copyfile(edu_mini / "sample/10BT/002_00000.parquet", small_corpus / changed)
    summary = run_pipeline(cfg, instance, stale_only=True, through="data")
    assert summary.ran == [("corpus", changed), ("token_shards", changed)]
    record = load_corpus_record(cfg, changed)
    assert record.sha256 == sha256_file(small_corpus / changed)
    assert run_pipeline(cfg, instance, stale_only=True, through="data").ran == []


@pytest.mark.e2e
def test_document_selection_change_reaches_the_shards(tmp_path, small_corpus, instance):
    cfg = make_cfg(tmp_path, small_corpus)
    run_pipeline(cfg, instance, through="data")
    keys = ["sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet"]
    fewer = make_cfg(tmp_path, small_corpus, "corpus.max_documents_per_file=20")
    assert statuses_by_asset(build_definitions(fewer), instance, keys)["corpus"] == {StaleStatus.STALE}
    summary = run_pipeline(fewer, instance, stale_only=True, through="data")
    assert sorted(summary.ran) == sorted([("corpus", k) for k in keys] + [("token_shards", k) for k in keys])
    manifest = json.loads(manifest_path(tmp_path / "data" / "shards", keys[0]).read_text())
    assert manifest["documents"] == 20


@pytest.mark.e2e
def test_speed_settings_and_more_files_do_not_make_anything_stale(tmp_path, small_corpus, edu_mini, instance):
    cfg = make_cfg(tmp_path, small_corpus, "corpus.files=1")
    run_pipeline(cfg, instance, through="data")
    key = "sample/10BT/000_00000.parquet"
    other = make_cfg(tmp_path, small_corpus, "corpus.files=2", "shards.threads=1", "shards.batch_documents=7")
    assert stale_statuses(build_definitions(other), instance, assets=["corpus", "token_shards"], partition_keys=[key]) == {
        ("corpus", key): StaleStatus.FRESH, ("token_shards", key): StaleStatus.FRESH}
    summary = run_pipeline(other, instance, stale_only=True, through="data")
    assert summary.ran == [("corpus", "sample/10BT/001_00000.parquet"), ("token_shards", "sample/10BT/001_00000.parquet")]


@pytest.mark.e2e
def test_validation_shard_stays_with_its_first_owner(tmp_path, small_corpus, edu_mini, instance):
    cfg = make_cfg(tmp_path, small_corpus)
    run_pipeline(cfg, instance, through="data")
    # a new file that sorts first must not take the validation shard over
    shutil.copyfile(edu_mini / "sample/10BT/002_00000.parquet", small_corpus / "sample/10BT/0000_first.parquet")
    run_pipeline(cfg, instance, stale_only=True, through="data")
    val = tmp_path / "data" / "shards" / "edu_fineweb_val_000000.bin.json"
    assert json.loads(val.read_text())["sources"][0]["key"] == "sample/10BT/000_00000.parquet"
    typo = make_cfg(tmp_path, small_corpus, "shards.val_file=sample/10BT/nope.parquet")
    with pytest.raises(Gpt2TrainError, match="not one of the source files"):
        run_pipeline(typo, instance, through="data")


@pytest.mark.e2e
def test_shard_checks_pass_then_catch_corruption(tmp_path, small_corpus, instance):
    cfg = make_cfg(tmp_path, small_corpus)
    run_pipeline(cfg, instance, through="data")
    key = "sample/10BT/001_00000.parquet"
    evaluations = {name: e.passed for name, e in run_shard_checks(cfg, instance, key).items()}
    assert evaluations == {"header": True, "size_matches_header": True, "tokens_in_vocab": True,
                           "sha256_matches_sidecar": True}

    out = tmp_path / "data" / "shards"
    shard = out / json.loads(manifest_path(out, key).read_text())["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0x01  # one bit in the token body
    shard.write_bytes(bytes(data))
    evaluations = run_shard_checks(cfg, instance, key)
    assert not evaluations["sha256_matches_sidecar"].passed
    assert shard.name in evaluations["sha256_matches_sidecar"].metadata["failures"].value
    assert evaluations["header"].passed and evaluations["size_matches_header"].passed


def test_sensor_registers_new_files_and_requests_runs(tmp_path, small_corpus, instance):
    cfg = make_cfg(tmp_path, small_corpus)
    sensor = build_definitions(cfg).resolve_sensor_def("corpus_files_sensor")
    result = sensor(dg.build_sensor_context(instance=instance))
    assert [r.partition_key for r in result.run_requests] == [
        "sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet"]
    (request,) = result.dynamic_partitions_requests
    assert list(request.partition_keys) == [r.partition_key for r in result.run_requests]
    instance.add_dynamic_partitions("corpus_files", list(request.partition_keys))
    again = sensor(dg.build_sensor_context(instance=instance))
    assert again.run_requests == [] and again.dynamic_partitions_requests == []


@pytest.mark.e2e
def test_failed_run_reports_the_cause(tmp_path, small_corpus, instance):
    (small_corpus / "sample/10BT/001_00000.parquet").write_bytes(b"")  # an empty file
    cfg = make_cfg(tmp_path, small_corpus)
    with pytest.raises(Gpt2TrainError, match="001_00000.parquet.*empty"):
        run_pipeline(cfg, instance, through="data")
    # The good partition before it was materialized and stays so.
    assert latest_materialization(instance, "token_shards", "sample/10BT/000_00000.parquet")



@pytest.mark.e2e
def test_the_code_location_validates_as_dagster_loads_it():
    # Stricter than building the Definitions: Dagster's own loader, as `dagster dev` runs it
    # (e.g. a job named like an asset passes build_definitions and fails here).
    import subprocess
    import sys

    from tests.paths import REPO

    r = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0 and "Validation successful" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
