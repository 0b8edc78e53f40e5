"""Evaluation: the Eleuther lm-eval harness runner, local task YAMLs and eval reports (issue #4).

- `evals.tasks`: configured tasks -> harness tasks (local data via generated YAMLs), input checks,
  `evals_code_version`;
- `evals.runner`: `evaluate_export(export_dir, report_dir, cfg.evals)` -> the report folder;
- `evals.report`: the markdown / HTML report beside published GPT-2 / GPT-3 figures;
- `evals.reference`: a `gpt2train eval` report (evals.reference_reports) as a column beside the scores,
  only where measured on the same data and settings;
- `evals.trend`: `write_trend(report_dirs, out_dir)` -> scores by checkpoint (table + plot).

No Dagster here: assets/ wraps these calls. Tests: tests/test_evals.py.
"""
