"""The eval report's "Training behind this checkpoint": what it says of the checkpoint's training, read from
the checkpoint's state.json (evals/report_extras.py `training_facts`), rendered (evals/report.py)."""

from __future__ import annotations

import re

from evals.report import ModelSize, ReportInputs, render_report
from evals.report_extras import training_facts
from gpt2train.config import config_to_dict, load_config
from gpt2train.model import GPT, GPTConfig
from gpt2train.training.checkpoint import mark_before_instability, save_checkpoint


def report_of(facts: dict) -> tuple[str, str]:
    return render_report(ReportInputs(title="t", step=facts["step"], tasks=[], results={},
                                      size=ModelSize("124M", "124M", None), baselines=None, baselines_file=None,
                                      in_loop={}, limit=None, lineage={}, training=facts))


def test_the_report_says_its_checkpoint_is_the_last_before_an_instability(tmp_path):
    cfg = load_config("tiny")
    model = GPT(GPTConfig.from_descriptor("tiny", 64)).init_weights(0)
    root = tmp_path / "checkpoints"
    for step in (2, 4):
        save_checkpoint(root, step, model_state=model.state_dict(), optimizer_state={}, loader_state={},
                        state={"config": config_to_dict(cfg), "loss": 5.0})
    mark_before_instability(root, 3, "loss nan, grad norm nan: not finite")

    marked = training_facts(root / "step_00000002", None, None)
    assert marked["before_instability"] == {"step": 3, "reason": "loss nan, grad norm nan: not finite",
                                            "says": "last checkpoint before the instability at step 3 (loss nan, "
                                                    "grad norm nan: not finite)"}
    md, html = report_of(marked)
    says = ("This is the last checkpoint before the instability at step 3 (loss nan, grad norm nan: not finite): "
            "kept by training, never pruned.")
    assert f"> **Note:** {says}" in md and says in html
    assert f"| tokens seen | {2 * cfg.train.total_batch_tokens:,} (step 2 × " in md

    unmarked = training_facts(root / "step_00000004", None, None)
    md, _ = report_of(unmarked)
    assert "before_instability" not in unmarked and "instability" not in md
    # Every table has a header that names its columns (the training facts', the lineage's): no row of empty cells.
    assert "| figure | value |" in md.split("## Training behind this checkpoint")[1]
    assert not re.search(r"^\|(\s*\|)+\s*$", md, re.M), md
