"""Evaluation: the Eleuther lm-eval harness runner, local task YAMLs and eval reports (issue #4)."""
