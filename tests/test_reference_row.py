"""evals/reference.py: a `gpt2train eval` report shown as a reference row in checkpoint reports, only where it
was measured on the same data and settings; config checks, lineage and staleness.

    pytest tests/test_reference_row.py -q -m "e2e or not e2e"   # the harness indexes its task YAMLs, then 3 tiny runs

The reference is the session export's weights (tests/fixtures/evals.py) with noise added (so its scores are
not the checkpoint's own), saved as save_pretrained leaves a model (config.json + model.safetensors) and
scored with `evaluate_export(reference=True)`, what `gpt2train eval` runs (its CLI is tested in
tests/test_evals.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gpt2train.config import load_config
from gpt2train.errors import ConfigError, DataError
from gpt2train.fileio import sha256_file
from tests.fixtures.evals import LIMIT, evals_cfg
from tests.paths import HELLASWAG

LABEL = "noisy-gpt2"


def _noisy_copy(export_dir: Path, out: Path) -> Path:
    """The export's weights plus noise, as a bare Hugging Face GPT-2 directory (no tokenizer, no lineage)."""
    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir()
    shutil.copy(export_dir / "config.json", out / "config.json")
    tensors = load_file(export_dir / "model.safetensors")
    g = torch.Generator().manual_seed(1)
    # Seed and scale chosen to move acc_norm on the 20 items (0.15 -> 0.35); many others leave it as it was.
    noisy = {k: (v + 0.3 * torch.randn(v.shape, generator=g) if k.endswith("weight") else v) for k, v in tensors.items()}
    save_file(noisy, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def references(tiny_export, task_index, tmp_path_factory):
    """(same, other_limit): reference reports of the noisy weights at the tests' limit and at another."""
    from evals.runner import evaluate_export

    root = tmp_path_factory.mktemp("references")
    model = _noisy_copy(tiny_export.out_dir, root / "gpt2")
    same = evaluate_export(model, root / "same", evals_cfg(), model_label=LABEL, reference=True)
    other = evaluate_export(model, root / "limit8", evals_cfg(limit=8), model_label=LABEL + "-8", reference=True)
    return same, other


@pytest.fixture(scope="module")
def checkpoint_report(tiny_export, references, tmp_path_factory):
    from evals.runner import evaluate_export

    same, other = references
    out = tmp_path_factory.mktemp("with-references") / "step20"
    ecfg = evals_cfg(reference_reports=[str(same.report_dir), str(other.report_dir)])
    return evaluate_export(tiny_export.out_dir, out, ecfg, model_label="tiny test model"), ecfg


def _score_row(markdown: str, metric: str) -> list[str]:
    (line,) = [ln for ln in markdown.splitlines() if ln.startswith(f"| hellaswag (hellaswag_local) | {metric} |")]
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.e2e
def test_reference_row_shows_the_references_own_numbers(checkpoint_report, references):
    report, _ = checkpoint_report
    same, other = references
    results = json.loads((same.report_dir / "results.json").read_text())["results"]["hellaswag_local"]
    # The reference's weights are not the checkpoint's: a column that showed our own numbers would fail here.
    ours = _score_row(report.markdown, "acc_norm")[2]
    assert ours != f"{results['acc_norm,none']:.4f} ± {results['acc_norm_stderr,none']:.4f}", ours
    header = next(ln for ln in report.markdown.splitlines() if ln.startswith("| task | metric |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[4:7] == ["GPT-2 124M (published, harness)", f"{LABEL} (measured here, same harness)",
                         f"{LABEL}-8 (measured here, same harness)"]
    for metric in ("acc", "acc_norm"):
        row = _score_row(report.markdown, metric)
        assert row[5] == f"{results[metric + ',none']:.4f} ± {results[metric + '_stderr,none']:.4f}"
        assert row[6] == "–"  # measured on 8 items: no number
    html = (report.report_dir / "report.html").read_text()
    assert f"{LABEL} (measured here, same harness)" in html


@pytest.mark.e2e
def test_a_reference_measured_differently_is_a_line_naming_what_differs(checkpoint_report, references):
    report, _ = checkpoint_report
    _, other = references
    notes = [ln for ln in report.markdown.splitlines() if ln.startswith(f"> **Note:** {LABEL}-8 (")]
    assert len(notes) == 1 and "no hellaswag score shown, measured differently" in notes[0], notes
    assert f"evals.limit: {LIMIT} vs 8" in notes[0] and f"items scored: {LIMIT} vs 8" in notes[0]
    assert "data:" not in notes[0] and "lm-eval" not in notes[0] and "task config" not in notes[0]
    assert f"{other.metrics['hellaswag']['acc_norm']:.4f}" not in notes[0]


@pytest.mark.e2e
def test_lineage_records_each_reference_and_its_comparison(checkpoint_report, references):
    from evals.tasks import evals_code_version

    report, ecfg = checkpoint_report
    same, other = references
    recorded = json.loads((report.report_dir / "lineage.json").read_text())
    assert recorded["references"] == report.lineage["references"]
    first, second = recorded["references"]
    assert first["lineage_sha256"] == sha256_file(same.report_dir / "lineage.json")
    assert first["results_sha256"] == sha256_file(same.report_dir / "results.json")
    assert first["label"] == LABEL and first["tasks"] == {"hellaswag": {"metrics": same.metrics["hellaswag"]}}
    assert second["tasks"]["hellaswag"]["differs"] == [f"evals.limit: {LIMIT} vs 8", f"items scored: {LIMIT} vs 8"]
    assert recorded["code_version"] == evals_code_version(ecfg) != evals_code_version(evals_cfg())
    assert f"reference: {LABEL}" in report.markdown


@pytest.mark.e2e
def test_other_data_is_named_and_a_reference_without_the_task_too(checkpoint_report, references, tmp_path):
    """The comparison alone, on the reports' own records: another local file; a task it never scored."""
    from evals.reference import compare_reference, load_references

    report, _ = checkpoint_report
    same, _ = references
    (ref,) = load_references([str(same.report_dir)])
    raw = json.loads((report.report_dir / "results.json").read_text())
    tasks = [dict(t, local_sha256="f" * 64) for t in report.lineage["tasks"]]
    (line,) = compare_reference(ref, tasks, raw, report.lineage["harness"]["lm_eval"]).notes()
    assert f"data: local file sha256 {'f' * 12}… vs local file sha256 {sha256_file(HELLASWAG)[:12]}…" in line
    tasks = [dict(t, name="piqa") for t in report.lineage["tasks"]]
    cmp = compare_reference(ref, tasks, raw, "0.0.1")
    assert cmp.notes() == [f"{LABEL} ({same.report_dir}): no piqa score shown, measured differently: it has no "
                           f"piqa score (its report scored: hellaswag)."]
    assert cmp.cell("piqa", "acc") == "–"
    same_tasks = compare_reference(ref, report.lineage["tasks"], raw, "0.0.1")
    assert same_tasks.tasks["hellaswag"].differs == [f"lm-eval 0.0.1 vs {report.lineage['harness']['lm_eval']}"]


@pytest.mark.e2e
def test_a_reference_whose_results_changed_is_refused_before_any_work(references, tmp_path):
    from evals.reference import load_references

    same, _ = references
    copy = tmp_path / "ref"
    shutil.copytree(same.report_dir, copy)
    (copy / "results.json").write_text((copy / "results.json").read_text().replace("hellaswag", "hellaswaG", 1))
    with pytest.raises(DataError, match=r"results.json is missing or not the file its lineage.json records; run "
                                        r"`gpt2train eval SOURCE --out .*` again$"):
        load_references([str(copy)])


# ------------------------------------------------------------------------------- config and staleness (no harness)

def _fake_report(d: Path, **lineage) -> Path:
    d.mkdir(parents=True)
    (d / "lineage.json").write_text(json.dumps({"artifact": "eval_report", "export": {"reference": True},
                                                "model_label": "gpt2", **lineage}))
    return d


def test_reference_reports_resolve_against_the_yaml_and_bad_ones_are_one_line(tmp_path):
    ref = _fake_report(tmp_path / "cfg" / "refs" / "gpt2")
    yaml_path = tmp_path / "cfg" / "my.yaml"
    yaml_path.write_text("data_dir: data\nevals:\n  reference_reports: [refs/gpt2]\n")
    assert load_config(yaml_path).evals.reference_reports == [str(ref.resolve())]
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "lineage.json").write_text(json.dumps({"artifact": "eval_report", "export": {"path": "x"}}))
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    (export_dir / "lineage.json").write_text(json.dumps({"artifact": "hf_export"}))
    cases = {tmp_path / "nope": "is not a folder; make one with `gpt2train eval SOURCE --out DIR`",
             tmp_path: "has no lineage.json: not a finished eval report",
             checkpoint: "is a checkpoint's eval report, not a reference model's",
             export_dir: "is not an eval report (lineage.json artifact='hf_export')"}
    for path, message in cases.items():
        with pytest.raises(ConfigError) as e:
            load_config("tiny", [f"evals.reference_reports=[{path}]"])
        assert str(e.value).startswith(f"evals.reference_reports: {path}") and message in str(e.value), str(e.value)
        assert "\n" not in str(e.value)


def test_code_version_moves_with_the_reference_list_and_content_only(tmp_path):
    from evals.tasks import evals_code_version

    a = _fake_report(tmp_path / "a", files={"results.json": "1" * 64})
    b = _fake_report(tmp_path / "b", files={"results.json": "2" * 64})
    base = evals_code_version(evals_cfg())
    assert evals_code_version(evals_cfg(reference_reports=[])) == base  # no references: the version as before
    with_a = evals_code_version(evals_cfg(reference_reports=[str(a)]))
    assert with_a != base
    assert evals_code_version(evals_cfg(reference_reports=[str(a)], batch_size=3, device="cuda")) == with_a
    moved = tmp_path / "moved" / "a"  # the same report elsewhere: the same content, the same version
    shutil.copytree(a, moved)
    assert evals_code_version(evals_cfg(reference_reports=[str(moved)])) == with_a
    changed = {evals_code_version(evals_cfg(reference_reports=[str(b)])),
               evals_code_version(evals_cfg(reference_reports=[str(a), str(b)]))}
    # Measured again: its lineage.json records another results.json.
    _fake_report(tmp_path / "a2", files={"results.json": "3" * 64})
    shutil.copy(tmp_path / "a2" / "lineage.json", a / "lineage.json")
    changed.add(evals_code_version(evals_cfg(reference_reports=[str(a)])))
    assert len(changed) == 3 and not changed & {base, with_a}


@pytest.mark.e2e
def test_the_summary_draws_the_references_scores(checkpoint_report, references, tmp_path):
    from evals.trend import write_trend

    report, _ = checkpoint_report
    same, _ = references
    trend = write_trend([report.report_dir], tmp_path / "trend")
    assert trend.rows[0]["references"] == {LABEL: {"hellaswag": same.metrics["hellaswag"]}}  # not the limit-8 one
    acc_norm = same.metrics["hellaswag"]["acc_norm"]
    assert f"{LABEL} hellaswag acc_norm {acc_norm:.4f}" in trend.markdown and f"{LABEL}-8" not in trend.markdown
    # The same report without its references: no reference line in the table or the plot.
    bare = tmp_path / "bare"
    shutil.copytree(report.report_dir, bare)
    lineage = json.loads((bare / "lineage.json").read_text())
    del lineage["references"]
    (bare / "lineage.json").write_text(json.dumps(lineage))
    plain = write_trend([bare], tmp_path / "trend-bare")
    assert "references" not in plain.rows[0] and "Reference models" not in plain.markdown
    assert plain.paths["trend.png"].read_bytes() != trend.paths["trend.png"].read_bytes()
