"""The eval assets: an lm-eval report per checkpoint (`eval_report`) and the trend (`eval_summary`).

`eval_report` wraps `evals.runner.evaluate_export`: the real Eleuther harness (`lm_eval.
simple_evaluate`, model `hf`) on the checkpoint's export, the configured tasks (default
HellaSwag; offline, the harness's own task definitions on local files), written to
`<data_dir>/reports/<partition>/` as results.json, per-sample jsonl, report.md / report.html
(metrics next to published GPT-2 / GPT-3 numbers, the in-loop HellaSwag and val loss of the
same step, the lineage) and lineage.json. Its code version hashes the eval modules and the eval
settings (tasks, few-shot, limit, local data hashes), so changing the task list makes only the
eval assets stale.

Where it runs is `evals.device` as evals/device.py resolves it (`auto`: never a GPU a training run on
this host is using, else the CPU); the device and why are the run's `gpt2train/eval_device` tag and
the materialization's `device` / `device_reason` metadata, and the report says it.

`eval_summary` wraps `evals.trend.write_trend`: metric vs step across all reports (llm.c's vislog).

Each writes its directory under that directory's writer lock (gpt2train/locks.py), taken by the
library (`evaluate_export`, `write_trend`), so a CLI evaluation is covered too: a second writer is
refused, naming the first.
"""

import base64
import hashlib
import json
from pathlib import Path

import dagster as dg

from assets.manifests import REPORT_MANIFEST, record_manifests
from assets.partitions import checkpoints
from evals.device import eval_device
from evals.runner import evaluate_export
from evals.tasks import evals_code_version
from evals.trend import write_trend
from gpt2train.config import Config
from gpt2train.errors import Gpt2TrainError
from gpt2train.lineage.records import code_version
from gpt2train.layout import LINEAGE_FILE, checkpoint_path, export_dir, report_dir, summary_dir


# The run tag naming where an eval_report run scored (evals/device.py).
EVAL_DEVICE_TAG = "gpt2train/eval_device"


def png_markdown(path: Path, alt: str) -> dg.MetadataValue:
    """A PNG inline in markdown metadata: the Dagster UI renders it in the asset's page."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})")


def build_eval_assets(cfg: Config) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name="eval_report",
        partitions_def=checkpoints,
        deps=[dg.AssetDep("hf_export", partition_mapping=dg.IdentityPartitionMapping())],
        code_version=evals_code_version(cfg.evals),
        group_name="evaluation",
        kinds={"python"},
        description="Eleuther lm-eval harness scores of the checkpoint's Hugging Face export (evals.tasks), "
                    "with per-sample logs and a report next to published GPT-2 / GPT-3 numbers.",
    )
    def eval_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        key = context.partition_key
        ckpt = checkpoint_path(cfg.data_dir, key)
        if not (export_dir(cfg.data_dir, key) / LINEAGE_FILE).exists():
            gone = "" if ckpt.is_dir() else f" and its checkpoint {ckpt} was deleted"
            raise Gpt2TrainError(f"the Hugging Face export {export_dir(cfg.data_dir, key)} of checkpoint {key} is missing"
                                 f"{gone}; rematerialize hf_export for this partition first"
                                 + (" (the checkpoint must exist: rerun training)" if gone else ""))
        # Decided as the run starts, from the training runs active on this host now; shown on the run in
        # the UI before the harness's minutes begin.
        device = eval_device(cfg)
        context.instance.add_run_tags(context.run_id, {EVAL_DEVICE_TAG: device.device})
        context.log.info(f"eval device {device.device}: {device.reason}")
        # The step, the checkpoint and the run's metrics.jsonl come from the export's lineage.json.
        report = evaluate_export(export_dir(cfg.data_dir, key), report_dir(cfg.data_dir, key), cfg.evals, model_label=key,
                                 device=device)
        record_manifests(cfg, context.instance, (REPORT_MANIFEST,))  # eval_summary reads every report through it
        metadata = {
            "report": dg.MetadataValue.md(report.markdown),
            "dir": dg.MetadataValue.path(str(report.report_dir)),
            "code_version": report.lineage.get("code_version", ""),
            "git_commit": report.lineage.get("git_commit") or "",
            "export_sha256": report.lineage["export"]["model_sha256"],
            "device": device.device,
            "device_reason": device.reason,
        }
        for task, metrics in report.metrics.items():
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    metadata[f"{task}/{name}"] = dg.MetadataValue.float(float(value))
        return dg.MaterializeResult(
            data_version=dg.DataVersion(hashlib.sha256(json.dumps(report.metrics, sort_keys=True).encode())
                                        .hexdigest()[:24]),
            metadata=metadata,
        )

    @dg.asset(
        name="eval_summary",
        deps=["report_manifest"],  # every report, in one edge at any number of checkpoints (assets/manifests.py)
        code_version=code_version(["eval_summary"], {}),
        group_name="evaluation",
        kinds={"python"},
        description="Every checkpoint's eval metrics against its step, per training run: a table and a plot "
                    "(llm.c's vislog).",
    )
    def eval_summary(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        keys = context.instance.get_dynamic_partitions(checkpoints.name)
        dirs = [report_dir(cfg.data_dir, k) for k in keys if (report_dir(cfg.data_dir, k) / LINEAGE_FILE).exists()]
        trend = write_trend(dirs, summary_dir(cfg.data_dir))
        metadata = {"reports": dg.MetadataValue.int(len(dirs)), "summary": dg.MetadataValue.md(trend.markdown),
                    "dir": dg.MetadataValue.path(str(summary_dir(cfg.data_dir)))}
        png = trend.paths.get("trend.png")
        if png is not None and Path(png).exists():
            metadata["trend"] = png_markdown(Path(png), "eval metrics vs step")
        return dg.MaterializeResult(metadata=metadata,
                                    data_version=dg.DataVersion(hashlib.sha256(trend.markdown.encode()).hexdigest()[:24]))

    return [eval_report, eval_summary]
