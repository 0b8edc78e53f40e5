"""The model cards (gpt2train/export/model_card.py): the export's README.md and the eval report's model_card.md,
built with huggingface_hub's ModelCard and read back by `ModelCard.load`.

    pytest tests/test_model_card.py -q     # offline; the report's card needs the session's report (e2e)

The export's card must round-trip through `ModelCard.load` (license, dataset, tags, library, and the base
model when `train.init_from` names one: the session's checkpoint with an init_from written into its
state.json, carded as the exporter cards it); a report's card must carry the report's scores as
model-index; and writing it must leave the export's files and the hashes the report recorded of them as
they were (the session's export and report: tests/fixtures/evals.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gpt2train.export.model_card import LICENSE, REPORT_CARD, TAGS, base_model, model_card, report_model_card
from gpt2train.fileio import sha256_file
from tests.fixtures.evals import LIMIT, RUN_TAG, STEP
from tests.paths import HELLASWAG

INIT_FROM = "/models/llm.c/gpt2_124M_bf16.bin"  # read as a name only: the file need not exist


def test_the_export_card_round_trips_through_model_card_load(tiny_checkpoint, tiny_export, tmp_path):
    """The card the exporter writes (model_card(), what export_checkpoint puts in README.md) of a checkpoint
    whose run started from llm.c's gpt2_124M_bf16.bin (by its config)."""
    from huggingface_hub import ModelCard
    from safetensors import safe_open

    from gpt2train.weights import read_checkpoint

    ckpt_dir = tmp_path / "runs" / RUN_TAG / "checkpoints" / tiny_checkpoint.name
    shutil.copytree(tiny_checkpoint, ckpt_dir)
    state = json.loads((ckpt_dir / "state.json").read_text())
    state["config"]["train"]["init_from"] = INIT_FROM
    (ckpt_dir / "state.json").write_text(json.dumps(state))
    lineage = json.loads((tiny_export.out_dir / "lineage.json").read_text())
    with safe_open(tiny_export.out_dir / "model.safetensors", "np") as f:  # the parameters, tied ones once
        n_params = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())  # noqa: SIM118
    text = model_card(read_checkpoint(ckpt_dir), lineage["checkpoint"], lineage["verification"],
                      lineage["model_sha256"], n_params, lineage["code_version"], tmp_path / "export")
    (tmp_path / "README.md").write_text(text, encoding="utf-8")
    card = ModelCard.load(tmp_path / "README.md")
    d = card.data
    assert (d.license, d.library_name, d.pipeline_tag, d.tags) == (LICENSE, "transformers", "text-generation", TAGS)
    assert d.datasets == ["HuggingFaceFW/fineweb-edu"] and d.base_model == "openai-community/gpt2"
    assert d.eval_results is None  # the scores are never in the export's own card
    assert str(card) == text  # what ModelCard writes back is the file, byte for byte
    # The body keeps what the hand-built card had, and names where the run started.
    for section in (f"# {RUN_TAG} at step {STEP}", "## Verification", "## Lineage", "## How to load"):
        assert f"\n{section}\n" in card.text, section
    assert f"| initialised from | `{INIT_FROM}` (base model `openai-community/gpt2`) |" in card.text
    # The exporter wrote that function's card: the session's export (init_from unset) carries its own.
    assert ModelCard.load(tiny_export.out_dir / "README.md").data.base_model is None


@pytest.mark.parametrize("init_from, expected", [
    ("hf:openai-community/gpt2", "openai-community/gpt2"),
    ("hf:openai-community/gpt2-medium@main", "openai-community/gpt2-medium"),
    ("/cache/hub/models--openai-community--gpt2-large/snapshots/32b71b12589c2f8d625668d2335a01cac3249519",
     "openai-community/gpt2-large"),
    ("/data/gpt2_124M.bin", "openai-community/gpt2"),
    ("/data/gpt2_1558M_bf16.bin", "openai-community/gpt2-xl"),
    ("/data/llmc/model_00010000.bin", None),  # an llm.c checkpoint of someone's own run
    ("/data/runs/tiny-0123456789/checkpoints/step_00000040", None),  # one of ours: no Hub id
    ("/data/exports/my-gpt2", None),  # a save_pretrained folder: its name is not a repo id
    ("hf:not a repo id", None),
    (None, None),
])
def test_base_model_is_a_hub_id_only_where_the_source_names_one(init_from, expected):
    assert base_model(init_from) == expected


def _card(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_report_card_replaces_model_index_and_refuses_a_broken_card(tmp_path):
    from huggingface_hub import ModelCard

    export_card = _card(tmp_path / "README.md",
                        "---\nlicense: mit\ntags:\n- gpt2\n---\n\n# m\n\n## Verification\n\nok\n")
    tasks = [{"name": "piqa", "harness_task": "piqa", "n_shot": 0, "n_samples": 10, "limit": 10}]
    configs = {"piqa": {"dataset_path": "baber/piqa", "validation_split": "validation"}}
    first = report_model_card(export_card, "m@1", {"piqa": {"acc": 0.6, "acc_stderr": 0.1}}, tasks, configs)
    # A card that already carries scores (an earlier report's, copied back) gets these instead of both.
    again = ModelCard(report_model_card(_card(tmp_path / "copied.md", first), "m@2",
                                        {"piqa": {"acc": 0.7, "acc_stderr": 0.1}}, tasks, configs))
    assert again.data.model_name == "m@2"
    assert [(r.dataset_type, r.dataset_split, r.metric_type, r.metric_value) for r in again.data.eval_results] == \
        [("baber/piqa", "validation", "acc", 0.7)]
    assert first.count("## Evaluation") == again.text.count("## Evaluation") == 1
    assert "| piqa | 0 | 10 | the harness's (Hub) | acc | 0.7000 | 0.1000 |" in again.text
    assert again.text.index("## Evaluation") < again.text.index("## Verification")
    assert "| 0.1000 |\n\n## Verification\n" in again.text

    with pytest.raises(ValueError, match="YAML header does not parse"):
        report_model_card(_card(tmp_path / "bad.md", "---\nlicense: [mit\n---\n# x\n"), "m", {}, [], {})
    with pytest.raises(ValueError, match="not found"):
        report_model_card(tmp_path / "gone.md", "m", {}, [], {})


@pytest.mark.e2e
def test_the_report_card_carries_the_scores_and_changes_nothing_of_the_export(tiny_export, tiny_report):
    from huggingface_hub import ModelCard

    from gpt2train.lineage.walk import walk_lineage

    export, report = tiny_export.out_dir, tiny_report
    # The export is byte for byte as it was exported (its lineage.json's hashes), and the report recorded
    # the hashes it has.
    recorded = json.loads((export / "lineage.json").read_text())["files"]
    assert {name: sha256_file(export / name) for name in recorded} == recorded
    assert report.lineage["export"]["lineage_sha256"] == sha256_file(export / "lineage.json")
    assert recorded["README.md"] == sha256_file(export / "README.md")

    card_path = report.report_dir / REPORT_CARD
    card, export_card = ModelCard.load(card_path), ModelCard.load(export / "README.md")
    results = {(r.task_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("hellaswag", m): v for m, v in report.metrics["hellaswag"].items() if not m.endswith("_stderr")}
    assert results and card.data.model_name == "tiny test model"
    r = card.data.eval_results[0]
    assert (r.task_type, r.dataset_type, r.dataset_name, r.dataset_args) == \
        ("text-generation", HELLASWAG.name, "hellaswag (0-shot)", {"num_few_shot": 0, "limit": LIMIT})
    # Everything else is the export's card: the same metadata, the same body around the Evaluation section.
    assert {k: v for k, v in card.data.to_dict().items() if k != "model-index"} == export_card.data.to_dict()
    evaluation = card.text[card.text.index("## Evaluation"):card.text.index("## Verification")]
    assert card.text.replace(evaluation, "") == export_card.text
    assert f"| hellaswag | 0 | {LIMIT} | local file `{HELLASWAG.name}` | acc |" in evaluation

    # The card is one of the report's recorded files, and the whole chain down to the checkpoint verifies.
    assert report.files[REPORT_CARD] == sha256_file(card_path)
    nodes = walk_lineage(report.report_dir, rehash=True, progress=False)
    assert [(n.kind, n.status) for n in nodes[:3]] == [("eval_report", "ok"), ("hf_export", "ok"), ("checkpoint", "ok")]
