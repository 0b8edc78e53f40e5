"""The whole chain through Dagster's own API: training (torchrun through Pipes), checkpoint
partitions, Hugging Face exports, lm-eval reports, the summary, and reruns of only what is stale.

Real components throughout: a SQLite-backed instance in a temp DAGSTER_HOME, torchrun, the
transformers export and the Eleuther harness (offline, its own hellaswag task on the invented
local file). The chain is the session's, materialized once by `gpt2train pipeline`
(tests/fixtures/chain.py); each scenario that changes something works on a copy of it
(`chain_copy`: its own DAGSTER_HOME and data dir) and reruns it in this process (`run_pipeline`).
"""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest

from assets.checkpoints import register_checkpoints
from gpt2train.errors import Gpt2TrainError
from gpt2train.lineage.walk import walk_lineage
from gpt2train.training.runs import find_checkpoints
from pipelines.definitions import build_definitions
from pipelines.runner import PipelineFailed, failure_cause, plan_stale_only, run_pipeline
from pipelines.staleness import StaleStatus, stale_report
from tests.commands import gpt2train
from tests.fixtures.chain import CHAIN_ASSETS, pipeline_args, ran

pytestmark = pytest.mark.e2e


def statuses(cfg, instance) -> dict:
    """Every (asset, partition)'s stale status; the bulk rules and Dagster's own resolver must agree,
    on the causes too."""
    defs = build_definitions(cfg)
    fast = stale_report(defs, instance)
    assert fast == stale_report(defs, instance, bulk=False), "bulk statuses differ from Dagster's resolver"
    return {k: v.status for k, v in fast.items()}


def assert_plan_was_followed(plan, summary) -> None:
    """What `--stale-only --dry-run` said (plan_stale_only, asked before the run) is what the run did: every
    pair it would run ran, and whatever else ran is one it said would be asked again after a rerun."""
    ran_pairs = set(summary.ran)
    would = {(a, k) for a, k, _ in plan.would_run}
    assert would <= ran_pairs, (plan.would_run, summary.ran)
    after = {(a, k) for a, k, _ in plan.after}
    for asset, key in ran_pairs - would:
        assert (asset, key) in after or any(asset in a.split(" + ") and k is None for a, k in after), \
            (asset, key, plan)


def test_chain_materializes_every_asset_with_lineage(materialized_chain, chain_instance):
    root, cfg, instance = materialized_chain.root, materialized_chain.cfg(), chain_instance
    assert {a for a, _ in ran(materialized_chain.output.stdout)} == set(CHAIN_ASSETS)
    keys = instance.get_dynamic_partitions("checkpoints")
    assert len(keys) == 2 and all("@step_0000000" in k for k in keys)
    assert all(s != StaleStatus.MISSING for s in statuses(cfg, instance).values())
    for key in keys:
        report = root / "data" / "reports" / key
        for name in ("results.json", "report.md", "report.html", "lineage.json", "samples_hellaswag_local.jsonl"):
            assert (report / name).exists() or name.startswith("samples"), name
        text = (report / "report.md").read_text()
        assert "hellaswag" in text.lower() and "0.2945" in text  # GPT-2 124M, llm.c's scorer, beside ours
        # The chain walks back to the corpus files, all hashes matching.
        nodes = walk_lineage(report)
        kinds = {n.kind for n in nodes}
        assert {"eval_report", "hf_export", "checkpoint", "token_shard", "corpus_record", "corpus_file"} <= kinds
        assert all(n.ok for n in nodes)
    # Dagster metadata of the training run: the figures the issue asks for.
    mat = instance.fetch_materializations(dg.AssetKey("training_run"), limit=1).records[0].asset_materialization
    for field in ("steps", "tokens", "final_train_loss", "final_val_loss", "tokens_per_second", "loss_curve",
                  "checkpoints", "code_version", "git_commit", "shards"):
        assert field in mat.metadata, field
    assert mat.metadata["steps"].value == 4
    # The checkpoint partitions' data version is their content hash.
    state = json.loads((root / "data" / "runs" / keys[0].split("@")[0] / "checkpoints" / "step_00000002"
                        / "state.json").read_text())
    recorded = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("checkpoint"),
                                                                     asset_partitions=[keys[0]]), limit=1).records
    assert recorded[0].asset_materialization.tags["dagster/data_version"] == state["model_sha256"]


def test_changing_nothing_makes_nothing_stale(chain_copy):
    instance, cfg = chain_copy.instance, chain_copy.cfg()
    assert set(statuses(cfg, instance).values()) == {StaleStatus.FRESH}
    summary = run_pipeline(cfg, instance, stale_only=True)
    assert summary.ran == []
    assert ("training_run", None) in summary.skipped and ("eval_summary", None) in summary.skipped


def test_stale_only_dry_run_says_what_would_run_and_why_and_runs_nothing(chain_copy):
    """`gpt2train pipeline --stale-only --dry-run` after an `evals.limit` change (a new eval_report code
    version) and a deleted export file: each pair it would run, with Dagster's cause or what the disk
    lacks; what it would only decide after a rerun; and nothing written to the instance, no run."""
    instance, data = chain_copy.instance, chain_copy.data
    keys = sorted(instance.get_dynamic_partitions("checkpoints"))
    files = sorted(instance.get_dynamic_partitions("corpus_files"))
    plan = plan_stale_only(chain_copy.cfg(), instance)
    assert plan.would_run == [] and plan.after == []
    assert sorted(plan.fresh, key=str) == sorted(
        [(a, f) for a in ("corpus", "token_shards") for f in files] + [("training_run", None)]
        + [(a, k) for a in ("hf_export", "eval_report") for k in keys] + [("eval_summary", None)], key=str)

    (data / "exports" / keys[0] / "model.safetensors").unlink()
    runs_before, events_before = len(instance.get_runs()), _last_storage_id(instance)
    r = gpt2train(*pipeline_args(chain_copy.root, "--stale-only", "--dry-run", "--set", "evals.limit=5"),
                  env_extra=chain_copy.env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    would = sorted(line for line in lines if line.startswith("would run "))
    assert len(would) == 3, r.stdout
    assert would[0].startswith(f"would run   eval_report [{keys[0]}]: stale: has a new code version"), would
    assert would[1].startswith(f"would run   eval_report [{keys[1]}]: stale: has a new code version"), would
    assert would[2].startswith(f"would run   hf_export [{keys[0]}]: fresh in Dagster's records, but "), would
    assert "model.safetensors" in would[2], would
    assert [line.split(":")[0] for line in lines if line.startswith("then asks")] == ["then asks   eval_summary"]
    assert f"would skip  hf_export [{keys[1]}] (fresh)" in lines and "would skip  training_run (fresh)" in lines
    assert lines[-1].startswith("dry run: 3 (asset, partition) pair(s) would run now") and "no Dagster run" in lines[-1]
    # Read only: no run, no event (no partition, manifest or check recorded), the export still missing.
    assert len(instance.get_runs()) == runs_before and _last_storage_id(instance) == events_before
    assert not (data / "exports" / keys[0] / "model.safetensors").exists()

    r = gpt2train(*pipeline_args(chain_copy.root, "--dry-run"), env_extra=chain_copy.env(), timeout=600)
    assert r.returncode == 2 and "add --stale-only" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def _last_storage_id(instance) -> int | None:
    """The newest event's id in the instance's event log: any write (a run's events, a partition, a
    manifest, a check result) moves it."""
    return instance.event_log_storage.get_maximum_record_id()


def test_stale_only_rebuilds_what_is_gone_from_disk(chain_copy):
    """Dagster's records say fresh, the disk disagrees: a deleted export file, a deleted report and a
    truncated shard are rebuilt, and nothing else; a report changed in place at its own size is
    caught by `verify` (a re-hash), not by the cheap check."""
    instance, cfg, data = chain_copy.instance, chain_copy.cfg(), chain_copy.data
    keys = instance.get_dynamic_partitions("checkpoints")
    (data / "exports" / keys[0] / "model.safetensors").unlink()
    shutil.rmtree(data / "reports" / keys[1])
    manifest = json.loads(sorted((data / "shards" / "partitions").glob("*.json"))[0].read_text())
    shard = data / "shards" / manifest["shards"][0]["file"]
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size - 2)
    plan = plan_stale_only(cfg, instance)
    summary = run_pipeline(cfg, instance, stale_only=True)
    assert_plan_was_followed(plan, summary)
    assert sorted(summary.ran) == sorted([("token_shards", manifest["key"]), ("hf_export", keys[0]),
                                          ("eval_report", keys[1])])
    assert shard.stat().st_size == size and (data / "reports" / keys[1] / "report.md").is_file()
    assert (data / "exports" / keys[0] / "model.safetensors").is_file()

    report = data / "reports" / keys[0] / "report.md"
    changed = bytearray(report.read_bytes())
    changed[-2] = ord("#") if changed[-2] != ord("#") else ord("%")
    report.write_bytes(bytes(changed))
    assert run_pipeline(cfg, instance, stale_only=True).ran == []
    assert run_pipeline(cfg, instance, stale_only=True, verify=True).ran == [("eval_report", keys[0])]
    assert set(statuses(cfg, instance).values()) == {StaleStatus.FRESH}


def test_a_checkpoint_rewritten_in_place_makes_only_its_export_stale(chain_copy):
    """A run directory reused by hand: the checkpoint's recorded content hash moves, and Dagster's
    resolver (which reads an external asset's observations) and the bulk rules both see it."""
    root, instance, cfg = chain_copy.root, chain_copy.instance, chain_copy.cfg()
    key = sorted(instance.get_dynamic_partitions("checkpoints"))[0]
    run, step = key.split("@")
    state_file = root / "data" / "runs" / run / "checkpoints" / step / "state.json"
    original = state_file.read_text()
    state = json.loads(original)
    state["model_sha256"] = "0" * 64
    state_file.write_text(json.dumps(state))
    register_checkpoints(instance, find_checkpoints(root / "data" / "runs"))
    assert {k for k, s in statuses(cfg, instance).items() if s != StaleStatus.FRESH} == {("hf_export", key)}
    state_file.write_text(original)  # back as it was: the recorded hash returns, and so does FRESH
    register_checkpoints(instance, find_checkpoints(root / "data" / "runs"))
    assert set(statuses(cfg, instance).values()) == {StaleStatus.FRESH}


def test_changing_the_eval_tasks_makes_only_evals_stale(chain_copy):
    instance = chain_copy.instance
    changed = chain_copy.cfg("evals.tasks=[hellaswag:0]")  # the task list, now with an explicit few-shot count
    stale = {k for k, s in statuses(changed, instance).items() if s != StaleStatus.FRESH}
    keys = instance.get_dynamic_partitions("checkpoints")
    assert stale == {("eval_report", k) for k in keys}
    plan = plan_stale_only(changed, instance)
    summary = run_pipeline(changed, instance, stale_only=True)
    assert_plan_was_followed(plan, summary)
    # 0-shot is what the harness ran before too: the same scores, so the summary it would redraw is
    # the same one (report_manifest's data version did not move) and stays fresh.
    assert sorted(summary.ran) == sorted([("eval_report", k) for k in keys])
    assert ("eval_summary", None) in summary.skipped
    assert set(statuses(changed, instance).values()) == {StaleStatus.FRESH}


def test_changing_the_shard_config_retrains_into_new_partitions(chain_copy):
    instance = chain_copy.instance
    old_keys = set(instance.get_dynamic_partitions("checkpoints"))
    changed = chain_copy.cfg("shards.shard_size=30000")
    before = statuses(changed, instance)
    assert {k for k, s in before.items() if s != StaleStatus.FRESH} == {
        ("token_shards", k) for k in instance.get_dynamic_partitions("corpus_files")}
    plan = plan_stale_only(changed, instance)
    summary = run_pipeline(changed, instance, stale_only=True)
    assert_plan_was_followed(plan, summary)
    ran = {a for a, _ in summary.ran}
    assert ran == {"token_shards", "training_run", "hf_export", "eval_report", "eval_summary"}  # not corpus
    new_keys = set(instance.get_dynamic_partitions("checkpoints")) - old_keys
    assert len(new_keys) == 2
    assert {k for a, k in summary.ran if a == "eval_report"} == new_keys
    # The old run's checkpoints, exports and reports are untouched and still fresh.
    after = statuses(changed, instance)
    assert all(after[(a, k)] == StaleStatus.FRESH for k in old_keys for a in ("hf_export", "eval_report"))


def test_a_deleted_checkpoint_fails_alone(chain_copy):
    root, instance = chain_copy.root, chain_copy.instance
    keys = sorted(instance.get_dynamic_partitions("checkpoints"))
    victim = keys[0]
    run, step = victim.split("@")
    ckpt = root / "data" / "runs" / run / "checkpoints" / step
    report = root / "data" / "reports" / victim
    report_before = (report / "report.md").read_bytes()
    shutil.rmtree(ckpt)
    shutil.rmtree(root / "data" / "exports" / victim)  # forces a re-export of that partition
    # Another eval limit: every report is stale, and the deleted checkpoint's partition has no export.
    with pytest.raises(PipelineFailed, match="deleted") as err:
        run_pipeline(chain_copy.cfg("evals.limit=5"), instance, stale_only=True)
    failed = {k for _, k, _ in err.value.summary.failed}
    assert failed == {victim}
    # Every other partition's report was redone; the victim's old report is intact, nothing half-written.
    reran = {k for a, k in err.value.summary.ran if a == "eval_report"}
    assert set(keys) - {victim} <= reran and victim not in reran
    assert (report / "report.md").read_bytes() == report_before
    assert not list(report.parent.glob(".*tmp*"))
    # Exporting the deleted checkpoint's partition says so, and writes nothing.
    defs = build_definitions(chain_copy.cfg())
    result = defs.resolve_job_def("checkpoint_evals").execute_in_process(
        partition_key=victim, instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey("hf_export")])
    assert not result.success and "deleted" in failure_cause(result.all_events)
    assert not (root / "data" / "exports" / victim).exists()


def test_a_failing_trainer_reports_its_own_error(chain_copy):
    broken = chain_copy.cfg("train.learning_rate=0.002", f"train.hellaswag_file={chain_copy.root / 'nope.jsonl'}")
    with pytest.raises(Gpt2TrainError, match="HellaSwag file .*nope.jsonl not found"):
        run_pipeline(broken, chain_copy.instance, through="training")
