"""The version of what each stage of the chain computes: part of its Dagster code version.

    code_version(["training"], settings)        # gpt2train/lineage/records.py

A stage's code version is its number here plus the settings that shape its output; nothing else. So
editing a comment, a docstring, a log line, an error message, CLI help, a plot, the llm.c flag table
or the GPU peak table, or moving a function to another module, makes nothing stale; and a change
that does alter a stage's output for the same inputs and settings must bump its number here, which
makes that stage (and, once it has rerun with new data versions, everything downstream) stale.

What keeps the numbers honest: tests/test_stage_versions.py computes each stage's output on fixed
inputs (tests/golden_outputs.py: the shards of a fixed corpus slice, the LR schedules, GPT-2's
init, one AdamW step, three training steps, every Triton kernel's forward and backward, an export's
bytes, lm-eval scores) and compares it with tests/golden/stage_outputs.json, recorded at the
version below. An output that moved while its version did not fails that test, naming the stage:
bump it here, then refresh the goldens with `python -m tests.golden_outputs --update`.
docs/lineage.md says why explicit numbers and not hashes of the source.
"""

STAGE_VERSIONS = {
    "corpus": 2,          # which documents of a source file are used, as what text (gpt2train/data/corpus.py,
                          # hub.py; a file type's reader also has its own number there, READER_VERSIONS)
    "shards": 1,          # a shard's bytes: tokenizer, document prefix, header, cut (data/tokenizer.py,
                          # shards.py, shard_writer.py)
    "training": 2,        # the weights: model, init, loader order, schedule, optimizer, loop (model.py,
                          # data/loader.py, training/loop.py, step.py, schedule.py, parallelize.py ...)
    "triton_kernels": 1,  # gpt2train/kernels' math, part of training's version when it may run them
    "export": 1,          # a Hugging Face export's weights, config and tokenizer files (gpt2train/export/)
    "evals": 1,           # the scores of an eval report (evals/tasks.py, runner.py)
    "eval_summary": 1,    # which reports the summary gathers, and by what key (evals/trend.py)
}
