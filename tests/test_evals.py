"""evals/: the real lm-eval harness on a real tiny Hugging Face GPT-2 export, and its reports.

    pytest tests/test_evals.py -q               # the checks that need no harness run
    pytest tests/test_evals.py -m e2e -q        # the report: the harness's task index is built once (~20-40 s)
                                                # and then read from its on-disk cache (evals/tasks.py)

The export and its report are the session's (tests/fixtures/evals.py): the tiny GPT at its initial
weights exported by gpt2train/export/hf_export.py, its run directory's metrics.jsonl saying what
training logged; the harness scores HellaSwag on the invented local file offline.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html as htmllib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from gpt2train.errors import Gpt2TrainError
from gpt2train.fileio import sha256_file
from tests.commands import gpt2train
from tests.fixtures.evals import LIMIT, RUN_TAG, STEP_MS, TOTAL_BATCH, evals_cfg
from tests.paths import BASELINES, HELLASWAG


@pytest.fixture
def export(tiny_export) -> Path:
    """The session's export folder (read only)."""
    return tiny_export.out_dir


@pytest.fixture
def run_dir(tiny_checkpoint) -> Path:
    """The exported checkpoint's run directory: its metrics.jsonl is what the report reads."""
    return tiny_checkpoint.parent.parent


@pytest.fixture
def report(tiny_report):
    """The session's report of the export (read only)."""
    return tiny_report


@pytest.mark.e2e
def test_harness_scores_local_hellaswag(report):
    d = report.report_dir
    for name in ("results.json", "samples_hellaswag.jsonl", "report.md", "report.html", "lineage.json",
                 "tasks/hellaswag_local.yaml"):
        assert (d / name).is_file(), name
    assert not list(d.parent.glob(".*tmp*")), "temp folder left behind"
    m = report.metrics["hellaswag"]
    assert 0.0 <= m["acc"] <= 1.0 and 0.0 <= m["acc_norm"] <= 1.0 and m["acc_norm_stderr"] > 0

    # Recompute acc and acc_norm from the per-item log-likelihoods the harness logged: argmax of the
    # log-likelihood (acc) and of the log-likelihood per character of the ending (acc_norm).
    samples = [json.loads(line) for line in (d / "samples_hellaswag.jsonl").read_text().splitlines()]
    assert len(samples) == LIMIT
    acc, acc_norm = [], []
    for s in samples:
        lls = np.array([r[0] for r in s["filtered_resps"]])
        lens = np.array([len(c) for c in s["doc"]["choices"]], dtype=float)
        acc.append(float(np.argmax(lls) == s["target"]))
        acc_norm.append(float(np.argmax(lls / lens) == s["target"]))
    results = json.loads((d / "results.json").read_text())
    assert "samples" not in results
    assert results["results"]["hellaswag_local"]["acc_norm,none"] == pytest.approx(np.mean(acc_norm))
    assert results["results"]["hellaswag_local"]["acc,none"] == pytest.approx(np.mean(acc))
    assert m["acc_norm"] == pytest.approx(np.mean(acc_norm))
    # The items scored are the local file's first LIMIT items, with their gold labels.
    items = [json.loads(line) for line in HELLASWAG.read_text().splitlines()][:LIMIT]
    assert [s["target"] for s in samples] == [int(i["label"]) for i in items]
    assert results["n-shot"] == {"hellaswag_local": 0}


@pytest.mark.e2e
def test_report_shows_baselines_in_loop_and_lineage(report, export):
    md = report.markdown
    assert md == (report.report_dir / "report.md").read_text()
    # Each score beside its chance level, and flagged where it is no better (this untrained model's
    # acc_norm) or worse by more than two standard errors (its acc on the invented items: 0 ± 0).
    assert "| this model (± stderr) | chance |" in md and "| acc_norm | 0.1500 ± 0.0819 | 0.25 |" in md
    assert "hellaswag acc_norm 0.1500 ± 0.0819 is within two standard errors of chance (0.25)" in md
    assert "hellaswag acc 0.0000 ± 0.0000 is below chance (0.25) by more than two standard errors" in md
    assert "0.3114" in md  # GPT-2 124M, harness acc_norm, beside our acc_norm
    assert "0.2945" in md  # GPT-2 124M, llm.c's scorer, beside the in-loop HellaSwag
    assert "124M (the smallest published)" in md
    assert "7.6543" in md and "0.3400" in md and "step 20 (this checkpoint)" in md  # metrics.jsonl at its step
    assert f"limit = {LIMIT}" in md
    assert RUN_TAG in md and "invented_val.jsonl" in md
    html = (report.report_dir / "report.html").read_text()
    assert "<table>" in html and "0.3114" in html

    lin = json.loads((report.report_dir / "lineage.json").read_text())
    assert lin["artifact"] == "eval_report" and lin["stage"] == "eval_report"
    assert lin["export"]["model_sha256"] == sha256_file(export / "model.safetensors")
    assert lin["export"]["lineage_sha256"] == sha256_file(export / "lineage.json")
    assert lin["checkpoint"]["key"] == f"{RUN_TAG}@step_00000020" and lin["checkpoint"]["step"] == 20
    assert lin["metrics"] == report.metrics
    assert lin["tasks"][0]["local_sha256"] == sha256_file(HELLASWAG) and lin["tasks"][0]["limit"] == LIMIT
    for name, digest in lin["files"].items():
        assert sha256_file(report.report_dir / name) == digest
    assert {"results.json", "samples_hellaswag.jsonl", "report.md", "report.html"} <= set(lin["files"])
    # The results never point into the temp folder the report was written in.
    assert ".tmp-" not in (report.report_dir / "results.json").read_text()


def test_an_earlier_steps_in_loop_numbers_are_not_called_this_checkpoints(run_dir):
    from evals.report import ModelSize, ReportInputs, in_loop_metrics, render_report

    path = run_dir / "metrics.jsonl"
    inputs = dict(title="t", tasks=[], results={}, size=ModelSize("124M", "124M", None), baselines=None,
                  baselines_file=None, limit=None, lineage={})
    md, _ = render_report(ReportInputs(step=30, in_loop=in_loop_metrics(path, 30), **inputs))
    assert "step 20: an earlier model than this step-30 checkpoint" in md and "(this checkpoint)" not in md
    assert "same step" not in md
    md, _ = render_report(ReportInputs(step=20, in_loop=in_loop_metrics(path, 20), **inputs))
    assert "step 20 (this checkpoint)" in md and "earlier model" not in md


def test_a_published_val_loss_stands_beside_a_checkpoint_only_on_its_own_dataset(run_dir, tiny_checkpoint, tmp_path):
    """GPT-2's FineWeb-Edu val loss beside a checkpoint validated on FineWeb-Edu (the Hub's files, or a
    mirror with its layout: edu-mini); for a folder of other text, no published val loss and one line why."""
    from evals.published import published_baselines
    from evals.report import ModelSize, ReportInputs, in_loop_metrics, render_report
    from evals.runner import trained_corpus
    from gpt2train.config import CorpusConfig
    from gpt2train.data.identity import corpus_identity

    inputs = dict(title="t", tasks=[], results={}, size=ModelSize("124M", "124M", None),
                  baselines=published_baselines(), baselines_file=None, limit=None, lineage={}, step=20,
                  in_loop=in_loop_metrics(run_dir / "metrics.jsonl", 20))
    figures = published_baselines()["models"]["124M"]
    edu, web = f"{figures['gpt2_val_loss_fineweb_edu']:.4f}", f"{figures['gpt2_val_loss_fineweb']:.4f}"

    hub = corpus_identity(CorpusConfig(source="hub"), ["sample/10BT/000_00000.parquet"]).to_dict()
    md, _ = render_report(ReportInputs(corpus=hub, **inputs))
    row = next(line for line in md.splitlines() if line.startswith("| val loss |"))
    assert f"GPT-2 val loss, FineWeb-Edu {edu}" in row and web not in row and "No published val loss" not in md

    book = corpus_identity(CorpusConfig(source=str(tmp_path / "book")), ["chapter1.jsonl"]).to_dict()
    md, _ = render_report(ReportInputs(corpus=book, **inputs))
    row = next(line for line in md.splitlines() if line.startswith("| val loss |"))
    assert edu not in row and web not in row
    assert (f"No published val loss beside this one: GPT-2's were measured on HuggingFaceFW/fineweb and "
            f"HuggingFaceFW/fineweb-edu, and this checkpoint's val tokens are local files {tmp_path / 'book'} (") in md
    md, _ = render_report(ReportInputs(corpus=None, **inputs))
    assert "what its val tokens are is unknown (the checkpoint's state.json is gone or names no corpus)" in md

    # The session's checkpoint: the tiny preset's corpus, edu-mini, a mirror of FineWeb-Edu's sample-10BT.
    ckpt_lineage = {"artifact": "hf_export", "checkpoint": {"path": str(tiny_checkpoint)}}
    corpus = trained_corpus(ckpt_lineage, tmp_path)
    assert corpus["dataset"] == "HuggingFaceFW/fineweb-edu" and corpus["config"] == "sample-10BT"


def test_in_loop_takes_nearest_earlier_step(run_dir):
    from evals.report import in_loop_metrics

    path = run_dir / "metrics.jsonl"
    got = in_loop_metrics(path, 15)
    assert got["val_loss"] == {"value": 10.9, "step": 0}
    assert got["hellaswag_acc_norm"]["step"] == 0 and got["hellaswag_acc_norm"]["n"] == 50
    assert in_loop_metrics(path, 40)["val_loss"]["step"] == 20
    assert in_loop_metrics(None, 20) == {}


@pytest.mark.e2e
def test_unknown_task_suggests_close_names(task_index):
    from evals.tasks import check_tasks

    with pytest.raises(Gpt2TrainError, match=r"no task 'hellaswg'.*did you mean.*hellaswag"):
        check_tasks(evals_cfg(tasks=["hellaswg"], local_data=[]))


@pytest.mark.e2e
def test_tiny_preset_resolves_to_the_local_hellaswag(task_index, tmp_path):
    from evals.tasks import resolve_tasks
    from gpt2train.config import load_config

    (task,) = resolve_tasks(load_config("tiny").evals, tmp_path)
    assert (task.name, task.harness_task, task.split) == ("hellaswag", "hellaswag_local", "validation")
    assert Path(task.local_path) == HELLASWAG.resolve() and task.harness_yaml.endswith("hellaswag/hellaswag.yaml")
    assert task.spec == str(tmp_path / "hellaswag_local.yaml")


@pytest.mark.e2e
def test_offline_without_local_data_is_an_error(task_index):
    from evals.tasks import check_tasks

    with pytest.raises(Gpt2TrainError, match=r"offline.*no local data for arc_easy.*arc_easy=PATH"):
        check_tasks(evals_cfg(tasks=["hellaswag", "arc_easy"]))


def test_local_data_errors_name_the_file_and_line(tmp_path):
    from evals.tasks import check_tasks

    with pytest.raises(Gpt2TrainError, match=r"nope\.jsonl not found"):
        check_tasks(evals_cfg(local_data=[f"hellaswag={tmp_path / 'nope.jsonl'}"]))
    with pytest.raises(Gpt2TrainError, match=r"not in evals.tasks"):
        check_tasks(evals_cfg(local_data=[f"hellaswag={HELLASWAG}", f"piqa={HELLASWAG}"]))

    lines = HELLASWAG.read_text().splitlines()[:5]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:3] + ['{"ctx_a": "broken'] + lines[3:]) + "\n")
    with pytest.raises(Gpt2TrainError, match=r"bad\.jsonl:4: not a valid hellaswag item"):
        check_tasks(evals_cfg(local_data=[f"hellaswag={bad}"]))

    item = json.loads(lines[0])
    for field, value, why in (("endings", item["endings"][:3], "4 strings"), ("label", "7", "0-3"),
                              ("ctx_b", None, "ctx_b")):
        broken = copy.deepcopy(item)
        if value is None:
            del broken[field]
        else:
            broken[field] = value
        bad.write_text("\n".join(lines[:1] + [json.dumps(broken)]) + "\n")
        with pytest.raises(Gpt2TrainError, match=rf"bad\.jsonl:2: .*{why}"):
            check_tasks(evals_cfg(local_data=[f"hellaswag={bad}"]))


def test_not_a_gpt2_export_is_an_error(export, tmp_path):
    from evals.runner import check_export, evaluate_export

    with pytest.raises(Gpt2TrainError, match="no such folder"):
        check_export(tmp_path / "missing")
    cases = {
        "config.json": lambda d: (d / "config.json").unlink(),
        "model_type='llama'": lambda d: (d / "config.json").write_text(json.dumps(
            {**json.loads((d / "config.json").read_text()), "model_type": "llama"})),
        "lineage.json missing": lambda d: (d / "lineage.json").unlink(),
        "no tokenizer": lambda d: [(d / name).unlink() for name in ("tokenizer.json", "vocab.json", "merges.txt")],
        "changed after the export": lambda d: (d / "model.safetensors").write_bytes(b"not the weights"),
    }
    for i, (message, damage) in enumerate(cases.items()):
        d = tmp_path / f"export{i}"
        shutil.copytree(export, d)
        damage(d)
        with pytest.raises(Gpt2TrainError, match=message):
            evaluate_export(d, tmp_path / f"report{i}", evals_cfg())
        assert not (tmp_path / f"report{i}").exists()


@pytest.mark.e2e
def test_failure_keeps_the_earlier_report(export, report, tmp_path):
    from evals.runner import evaluate_export

    out = tmp_path / "report"
    shutil.copytree(report.report_dir, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    # A config.json that does not match the weights: passes the checks, fails when the harness loads it.
    bad = tmp_path / "export"
    shutil.copytree(export, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "n_embd": 64}))
    with pytest.raises(Exception, match="(?i)size|mismatch"):
        evaluate_export(bad, out, evals_cfg())
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".report.lock", "export", "report"]  # no temp folder


def test_evals_code_version(tmp_path):
    from evals.tasks import evals_code_version

    local = tmp_path / "val.jsonl"
    local.write_bytes(HELLASWAG.read_bytes())
    base = evals_code_version(evals_cfg(local_data=[f"hellaswag={local}"]))
    assert evals_code_version(evals_cfg(local_data=[f"hellaswag={local}"], batch_size=3, device="cuda")) == base
    changed = {evals_code_version(evals_cfg(local_data=[f"hellaswag={local}"], tasks=["hellaswag", "piqa"])),
               evals_code_version(evals_cfg(local_data=[f"hellaswag={local}"], tasks=["hellaswag:5"])),
               evals_code_version(evals_cfg(local_data=[f"hellaswag={local}"], limit=None))}
    local.write_text("\n".join(HELLASWAG.read_text().splitlines()[:10]) + "\n")
    changed.add(evals_code_version(evals_cfg(local_data=[f"hellaswag={local}"])))
    assert base not in changed and len(changed) == 4


@pytest.mark.e2e
def test_write_trend(export, report, tmp_path, caplog):
    from evals.runner import evaluate_export
    from evals.trend import write_trend

    # A second real report of the same export, labelled step 40 (training logged nothing after 20), in
    # the folder beside a copy of the step-20 report: its report.html embeds the trend of both.
    first = tmp_path / "step20"
    shutil.copytree(report.report_dir, first)
    second = evaluate_export(export, tmp_path / "step40", evals_cfg(limit=8), step=40)
    assert second.lineage["in_loop"]["val_loss"]["step"] == 20
    assert second.lineage["trend"]["reports"] == [{"path": str(first.resolve()), "step": 20,
                                                   "lineage_sha256": sha256_file(first / "lineage.json")}]
    images = _embedded_pngs((second.report_dir / "report.html").read_text())
    assert len(images) == 2 and images[1] == (second.report_dir / "trend.png").read_bytes()
    assert "![Scores of this run's reports up to step 40](trend.png)" in second.markdown
    assert second.lineage["files"]["trend.png"] == sha256_file(second.report_dir / "trend.png")
    assert "trend" not in report.lineage["files"] and report.lineage["trend"] == {"reports": []}  # none earlier
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    trend = write_trend([second.report_dir, unfinished, first], tmp_path / "trend")
    assert [r["step"] for r in trend.rows] == [20, 40]
    assert trend.skipped == [str(unfinished)] and "unfinished" in caplog.text
    png = trend.paths["trend.png"].read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    md = trend.paths["summary.md"].read_text()
    assert md == trend.markdown
    table = [line for line in md.splitlines() if line.startswith(f"| {RUN_TAG}")]
    assert len(table) == 2
    assert f"{report.metrics['hellaswag']['acc_norm']:.4f}" in table[0] and "7.6543" in table[0]
    assert f"{second.metrics['hellaswag']['acc_norm']:.4f}" in table[1] and "(step 20)" in table[1]
    summary = json.loads(trend.paths["summary.json"].read_text())
    assert [r["step"] for r in summary["reports"]] == [20, 40]
    assert not list((tmp_path / "trend").glob(".*"))


def test_two_run_directories_with_one_run_tag_are_two_lines(tmp_path):
    """A run trained again in another directory (e.g. `runs/tiny` by an old CLI, `runs/<tag>` by the
    pipeline) records the same run tag: the summary keeps them apart by directory."""
    from evals.trend import write_trend

    dirs = []
    for run, step, acc in (("tiny", 20, 0.18), ("tiny-abc", 20, 0.24), ("tiny", 40, 0.2), ("tiny-abc", 40, 0.3)):
        d = tmp_path / f"{run}@{step}"
        d.mkdir()
        (d / "lineage.json").write_text(json.dumps({
            "artifact": "eval_report", "step": step, "metrics": {"hellaswag": {"acc": acc}}, "in_loop": {},
            "checkpoint": {"run_tag": "tiny-abc", "key": f"{run}@step_{step:08d}"}}))
        dirs.append(d)
    trend = write_trend(dirs, tmp_path / "trend")
    assert [(r["run"], r["step"]) for r in trend.rows] == [("tiny", 20), ("tiny", 40), ("tiny-abc", 20),
                                                           ("tiny-abc", 40)]
    assert "| tiny | 20 | 0.1800 |" in trend.markdown and "| tiny-abc | 20 | 0.2400 |" in trend.markdown


@pytest.mark.e2e
def test_gpt2train_eval_scores_any_hf_gpt2_as_the_reports_do(export, report, tmp_path):
    """`gpt2train eval` on the export's weights saved as save_pretrained leaves them (config.json and
    model.safetensors: no tokenizer, no lineage): the same harness, tasks and scores as its report."""
    import shutil as sh

    ref = tmp_path / "gpt2"
    ref.mkdir()
    for name in ("config.json", "model.safetensors"):
        sh.copy(export / name, ref / name)
    r = gpt2train("eval", ref, "--out", tmp_path / "report", "--config", "tiny", "--set", f"evals.limit={LIMIT}",
                  "--set", "evals.device=cpu", "--set", f"evals.local_data=[hellaswag={HELLASWAG}]")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"eval report: {tmp_path / 'report' / 'report.md'}" in r.stdout
    lineage = json.loads((tmp_path / "report" / "lineage.json").read_text())
    assert lineage["metrics"] == report.metrics
    assert lineage["export"]["reference"] is True and lineage["model_label"] == "gpt2"
    assert not any(name.startswith("tokenizer") or name == "vocab.json" for name in lineage["files"])
    r = gpt2train("eval", tmp_path / "nothing", "--out", tmp_path / "r2")
    assert r.returncode == 2 and "is not a GPT-2 Hugging Face directory: no such folder" in r.stderr, r.stderr


@pytest.mark.e2e
def test_gpt2train_eval_on_an_export_reads_its_lineage_and_writes_no_bars_into_a_file(export, tmp_path):
    """`gpt2train eval` on one of gpt2train's exports, from a folder outside any git checkout, its output
    into a file (not a terminal): the report names the export's step, run and in-loop figures as the
    eval_report asset's does, and the output holds no progress-bar redraw (`\r`) and no git message."""
    import os
    import shutil as sh
    import subprocess

    from tests.fixtures.evals import METRICS, STEP

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    log = tmp_path / "eval.log"
    with open(log, "w") as out:
        r = subprocess.run([sh.which("gpt2train"), "eval", str(export), "--out", str(tmp_path / "report"),
                            "--config", "tiny", "--set", "evals.limit=8", "--set", "evals.device=cpu",
                            "--set", f"evals.local_data=[hellaswag={HELLASWAG}]"],
                           stdout=out, stderr=subprocess.STDOUT, cwd=cwd, timeout=300,
                           env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)})
    raw = log.read_bytes()  # bytes: reading text would turn each "\r" into "\n"
    text = raw.decode()
    assert r.returncode == 0, text[-3000:]
    assert b"\r" not in raw, f"progress-bar bytes in the output: {raw[-2000:]!r}"
    assert "not a git repository" not in text and "fatal:" not in text, text[-2000:]
    lineage = json.loads((tmp_path / "report" / "lineage.json").read_text())
    assert "reference" not in lineage["export"] and lineage["step"] == STEP
    assert lineage["checkpoint"]["run_tag"] == RUN_TAG and lineage["checkpoint"]["step"] == STEP
    val = next(m["val_loss"] for m in METRICS if m["step"] == STEP and "val_loss" in m)
    assert lineage["in_loop"]["val_loss"] == {"value": val, "step": STEP}
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"Step {STEP} ·" in md and "Step ?" not in md


# ------------------------------------------------------------------------------- what the report says about training

def _embedded_pngs(html: str) -> list[bytes]:
    """Every image report.html carries inline, decoded from its data URI."""
    return [base64.b64decode(b64, validate=True) for b64 in re.findall(r"src='data:image/png;base64,([^']+)'", html)]


@pytest.mark.e2e
def test_report_shows_tokens_wall_time_and_flops_of_the_checkpoint(report, export, run_dir):
    """Recomputed here from the checkpoint's state.json, metrics.jsonl and config.json with llm.c's
    count: FLOPs = (6 N + 6 L C T) D, N every parameter with the vocabulary padded to a multiple of 128."""
    run = run_dir
    state = json.loads((run / "checkpoints" / "step_00000020" / "state.json").read_text())
    hf = json.loads((export / "config.json").read_text())
    L, C, block, T = hf["n_layer"], hf["n_embd"], hf["n_positions"], state["config"]["train"]["seq_len"]
    Vp = -(-hf["vocab_size"] // 128) * 128
    N = Vp * C + block * C + L * (12 * C * C + 13 * C) + 2 * C  # wte, wpe, blocks, ln_f (lm_head tied)
    tokens = state["step"] * state["config"]["train"]["total_batch_tokens"]
    flops = (6 * N + 6 * L * C * T) * tokens
    wall = sum(STEP_MS.values()) / 1000  # step 21's 5 s came after the checkpoint

    t = report.lineage["training"]
    assert (t["tokens"], t["n_params"], t["flops"]) == (tokens, N, flops) and tokens == 20 * TOTAL_BATCH
    assert t["wall_seconds"] == pytest.approx(wall) and t["steps_timed"] == 20
    md = report.markdown
    assert f"| tokens seen | {tokens:,} (step 20 × {TOTAL_BATCH:,} tokens per step) |" in md
    assert f"| training wall time | {wall:.1f}s: the step times metrics.jsonl logged (all 20 steps)" in md
    assert f"| training FLOPs | {flops:.3e} = (6·N + 6·L·C·T) · D with N = {N:,} parameters" in md
    assert f"T = {T}," in md
    # What they were made from: the state.json's hash and the hash of metrics.jsonl's lines up to step 20.
    lines = [line for line in (run / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 20]
    assert t["state"]["sha256"] == sha256_file(run / "checkpoints" / "step_00000020" / "state.json")
    assert t["metrics"]["sha256"] == hashlib.sha256("".join(f"{x}\n" for x in lines).encode()).hexdigest()
    assert t["metrics"]["records"] == len(lines) == 24


@pytest.mark.e2e
def test_report_sample_is_gpt2trains_sampler_on_the_exported_weights(report):
    from evals.report_extras import SAMPLE_PROMPT, SAMPLE_SEED, SAMPLE_TOKENS, SAMPLE_TOP_K
    from gpt2train.model import GPT, GPTConfig
    from gpt2train.sample import sample

    model = GPT(GPTConfig.from_descriptor("tiny", 64))
    model.init_weights(0)  # the weights tiny_checkpoint saved and tiny_export exported
    expected = sample(model, SAMPLE_PROMPT, tokens=SAMPLE_TOKENS, top_k=SAMPLE_TOP_K, seed=SAMPLE_SEED)[0]
    assert expected.startswith(SAMPLE_PROMPT) and len(expected) > len(SAMPLE_PROMPT)
    assert report.lineage["sample"]["text"] == expected
    assert f"```text\n{expected}\n```" in report.markdown
    assert f"<pre>{htmllib.escape(expected)}</pre>" in (report.report_dir / "report.html").read_text()
    other = sample(model, SAMPLE_PROMPT, tokens=SAMPLE_TOKENS, top_k=SAMPLE_TOP_K, seed=SAMPLE_SEED + 1)[0]
    assert other != expected  # the seed decides the text: the check above could fail
    # Drawn on the eval's device, which the report names with why (evals/device.py).
    assert report.lineage["sample"]["device"] == report.lineage["device"] == "cpu"
    assert report.lineage["device_choice"] == {"device": "cpu", "requested": "cpu",
                                               "reason": "evals.device=cpu, as configured"}
    assert "| eval device | cpu: evals.device=cpu, as configured |" in report.markdown


@pytest.mark.e2e
def test_a_report_reads_the_export_once_and_samples_from_the_harness_weights(export, report, tmp_path, monkeypatch):
    """The sample's model is the harness's loaded weights (report_extras.sampler_model), not a second
    load of the export: gpt2train's loader is never called, and the text is the session report's."""
    import gpt2train.weights
    from evals.runner import evaluate_export

    loads = []
    real = gpt2train.weights.load_model
    monkeypatch.setattr(gpt2train.weights, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    again = evaluate_export(export, tmp_path / "again", evals_cfg(), model_label="tiny test model")
    assert loads == []
    assert again.lineage["sample"] == report.lineage["sample"]
    assert again.lineage["training"]["flops"] == report.lineage["training"]["flops"]


@pytest.mark.e2e
def test_report_html_embeds_the_loss_curve(report):
    d = report.report_dir
    images = _embedded_pngs((d / "report.html").read_text())
    assert len(images) == 1  # the loss curve; no earlier report of this run for a trend
    png = images[0]
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert png == (d / "loss_curve.png").read_bytes()
    assert report.lineage["files"]["loss_curve.png"] == hashlib.sha256(png).hexdigest()
    assert "![Train and val loss from metrics.jsonl up to step 20](loss_curve.png)" in report.markdown


@pytest.mark.e2e
def test_report_extras_are_the_same_for_the_same_inputs(report, export, run_dir, tmp_path):
    """The loss curve's bytes, the sample and the facts depend on the inputs alone (lineage.json hashes
    them); and only metrics.jsonl's lines up to the checkpoint count, so a run still training does not
    move them."""
    from evals.report_extras import ExtrasSources, write_report_extras

    run = run_dir
    lin = json.loads((export / "lineage.json").read_text())
    out = []
    for i in range(2):
        if i:  # the run went on: more lines after the checkpoint's step
            metrics = tmp_path / "metrics.jsonl"
            metrics.write_text((run / "metrics.jsonl").read_text() + json.dumps({"step": 22, "loss": 1.0, "ms": 9e3})
                               + "\n")
        else:
            metrics = run / "metrics.jsonl"
        (tmp_path / str(i)).mkdir()
        src = ExtrasSources(tmp_path / "report", export, lin, metrics, report.lineage, None)
        extras = write_report_extras(tmp_path / str(i), src)
        out.append((extras.images, extras.sample, {k: v for k, v in extras.training.items() if k != "metrics"},
                    extras.training["metrics"]["sha256"]))
    assert out[0] == out[1]
    assert out[0][0][0][2] == (report.report_dir / "loss_curve.png").read_bytes()


@pytest.mark.e2e
def test_comparison_names_its_size_and_says_when_it_is_far(report, export):
    from safetensors import safe_open

    from evals.report import ModelSize, size_note

    with safe_open(export / "model.safetensors", "np") as f:
        n = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())  # noqa: SIM118
    md = report.markdown
    assert "| GPT-2 124M (published, harness) |" in md and "| GPT-2 124M (published, same scorer) |" in md
    assert f"model has {n / 1e6:.1f} M parameters, {124e6 / n:.0f}× smaller than the comparison (GPT-2 124M" in md
    assert 4 < 124e6 / n  # the tiny model: 6.8 M parameters, 18× smaller
    assert size_note(ModelSize("124M", "124M", 124_439_808)) is None  # OpenAI's GPT-2 124M itself
    assert size_note(ModelSize("124M", "124M", 40_000_000)) is None  # 3.1× smaller: not far
    assert "8× smaller than the comparison (GPT-2 1558M" in size_note(ModelSize("1558M", "1558M", 200_000_000))
    assert "5× larger than the comparison (GPT-2 124M" in size_note(ModelSize("124M", "124M", 620_000_000))
    assert size_note(ModelSize("124M", "124M", None)) is None


def test_training_png_draws_the_published_baselines_of_its_size(tmp_path):
    """llm.c's vislog lines: OpenAI's GPT-2 (val loss, HellaSwag) and GPT-3 (HellaSwag) at the model's
    size, only for one of GPT-2's published shapes; the values are those of the shared table of figures."""
    from evals.published import baseline_lines
    from gpt2train.training.plots import plot_training

    shared = json.loads(BASELINES.read_text())["models"]
    lines = baseline_lines(12, 768)  # d12: GPT-2 124M's shape
    assert [(x.panel, x.value) for x in lines] == [
        ("loss", shared["124M"]["gpt2_val_loss_fineweb"]), ("loss", shared["124M"]["gpt2_val_loss_fineweb_edu"]),
        ("hellaswag", shared["124M"]["gpt2_hellaswag_llmc"]), ("hellaswag", shared["124M"]["gpt3_hellaswag"])]
    assert all("124M" in x.label or "125M" in x.label for x in lines)
    assert "llm.c vislog" in lines[0].label and "GPT-3 Small 125M" in lines[3].label
    assert [x.value for x in baseline_lines(48, 1600)] == [
        shared["1558M"]["gpt2_val_loss_fineweb"], shared["1558M"]["gpt2_hellaswag_llmc"],
        shared["1558M"]["gpt3_hellaswag"]]
    assert baseline_lines(2, 128) == []  # the tiny preset: no published model of its size
    assert baseline_lines(12, 512) == [] and baseline_lines(6, 384) == []  # not GPT-2's shapes

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 1, "loss": 10.0, "lr": 1e-4, "norm": 2.0}, {"step": 2, "loss": 9.0, "lr": 2e-4, "norm": 1.5},
        {"step": 2, "val_loss": 9.5}, {"step": 2, "hellaswag_acc_norm": 0.26}]))
    with_lines = plot_training(metrics, tmp_path / "d12.png", shape=(12, 768)).read_bytes()
    without = plot_training(metrics, tmp_path / "tiny.png", shape=(2, 128)).read_bytes()
    assert with_lines.startswith(b"\x89PNG") and without.startswith(b"\x89PNG") and with_lines != without
    assert plot_training(metrics, tmp_path / "none.png").read_bytes() == without
