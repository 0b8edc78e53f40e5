"""The model cards (gpt2train/export/model_card.py): the export's README.md and the eval report's model_card.md,
built with huggingface_hub's ModelCard and read back by `ModelCard.load`.

    pytest tests/test_model_card.py -q     # ~45 s on 2 CPU cores, offline: an export (~10 s) and the real
                                           # harness on 4 local HellaSwag items (~25 s, mostly its task index)

The export's card must round-trip through `ModelCard.load` (license, dataset, tags, library, and the base
model when `train.init_from` names one); a report's card must carry the report's scores as model-index;
and writing it must leave the export's files and the hashes the report recorded of them as they were.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt2train.config import EvalsConfig, config_to_dict, load_config
from gpt2train.export.hf_export import export_checkpoint
from gpt2train.export.model_card import LICENSE, REPORT_CARD, TAGS, base_model, report_model_card
from gpt2train.fileio import sha256_file
from gpt2train.model import GPT, GPTConfig
from gpt2train.training.checkpoint import save_checkpoint
from tests.conftest import HELLASWAG

RUN_TAG = "tiny-fedcba9876"
INIT_FROM = "/models/llm.c/gpt2_124M_bf16.bin"  # read as a name only: the file need not exist


@pytest.fixture(scope="module")
def offline():
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")  # neither card may need the Hub
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def export(tmp_path_factory, offline) -> Path:
    """An export of a tiny checkpoint whose run started from llm.c's gpt2_124M_bf16.bin (by its config)."""
    root = tmp_path_factory.mktemp("card") / RUN_TAG / "checkpoints"
    cfg = config_to_dict(load_config("tiny"))
    cfg["train"]["init_from"] = INIT_FROM
    model = GPT(GPTConfig.from_descriptor("tiny", 64)).init_weights(0)
    ckpt = save_checkpoint(root, 20, model_state=model.state_dict(), optimizer_state={}, loader_state={},
                           state={"config": cfg, "loss": 6.5, "lineage": {"run_tag": RUN_TAG}})
    return export_checkpoint(ckpt, tmp_path_factory.mktemp("exports") / "tiny-20").out_dir


def test_the_export_card_round_trips_through_model_card_load(export):
    from huggingface_hub import ModelCard

    text = (export / "README.md").read_text(encoding="utf-8")
    card = ModelCard.load(export / "README.md")
    d = card.data
    assert (d.license, d.library_name, d.pipeline_tag, d.tags) == (LICENSE, "transformers", "text-generation", TAGS)
    assert d.datasets == ["HuggingFaceFW/fineweb-edu"] and d.base_model == "openai-community/gpt2"
    assert d.eval_results is None  # the scores are never in the export's own card
    assert str(card) == text  # what ModelCard writes back is the file, byte for byte
    # The body keeps what the hand-built card had, and names where the run started.
    for section in ("# tiny-fedcba9876 at step 20", "## Verification", "## Lineage", "## How to load"):
        assert f"\n{section}\n" in card.text, section
    assert f"| initialised from | `{INIT_FROM}` (base model `openai-community/gpt2`) |" in card.text


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


def test_the_report_card_carries_the_scores_and_changes_nothing_of_the_export(export, tmp_path):
    from huggingface_hub import ModelCard

    from evals.runner import evaluate_export
    from gpt2train.lineage.walk import walk_lineage

    before = {p.name: p.read_bytes() for p in sorted(export.iterdir())}
    ecfg = EvalsConfig(tasks=["hellaswag"], limit=4, local_data=[f"hellaswag={HELLASWAG}"], batch_size=4, device="cpu")
    report = evaluate_export(export, tmp_path / "report", ecfg, model_label=f"{RUN_TAG}@step_00000020")

    # The export is byte for byte as it was, and the report recorded the hashes it has.
    assert {p.name: p.read_bytes() for p in sorted(export.iterdir())} == before
    assert report.lineage["export"]["lineage_sha256"] == sha256_file(export / "lineage.json")
    assert json.loads((export / "lineage.json").read_text())["files"]["README.md"] == sha256_file(export / "README.md")

    card_path = report.report_dir / REPORT_CARD
    card, export_card = ModelCard.load(card_path), ModelCard.load(export / "README.md")
    results = {(r.task_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("hellaswag", m): v for m, v in report.metrics["hellaswag"].items() if not m.endswith("_stderr")}
    assert results and card.data.model_name == f"{RUN_TAG}@step_00000020"
    r = card.data.eval_results[0]
    assert (r.task_type, r.dataset_type, r.dataset_name, r.dataset_args) == \
        ("text-generation", HELLASWAG.name, "hellaswag (0-shot)", {"num_few_shot": 0, "limit": 4})
    # Everything else is the export's card: the same metadata, the same body around the Evaluation section.
    assert {k: v for k, v in card.data.to_dict().items() if k != "model-index"} == export_card.data.to_dict()
    evaluation = card.text[card.text.index("## Evaluation"):card.text.index("## Verification")]
    assert card.text.replace(evaluation, "") == export_card.text
    assert f"| hellaswag | 0 | 4 | local file `{HELLASWAG.name}` | acc |" in evaluation

    # The card is one of the report's recorded files, and the whole chain down to the checkpoint verifies.
    assert report.files[REPORT_CARD] == sha256_file(card_path)
    nodes = walk_lineage(report.report_dir, rehash=True, progress=False)
    assert [(n.kind, n.status) for n in nodes[:3]] == [("eval_report", "ok"), ("hf_export", "ok"), ("checkpoint", "ok")]
