"""Training: llm.c's GPT-2 recipe in PyTorch, one process or many under torchrun.

    ../train.py          the training command (`gpt2train train` = `python -m gpt2train.train`)
    loop.py              train(cfg): the Trainer, which owns its parts (TrainState), its set-up, the loop and
                         train_step (micro-batches, all-reduce, clipping, AdamW); returns a TrainSummary
    step.py              what a step decides and reports: the update guard (the skip rules), StepResult
    evals.py             in-loop validation loss, HellaSwag and samples
    schedule.py          the learning-rate schedules
    parallelize.py       the model built and spread over devices and memory (`apply_*`), the optimizer
    distributed.py       the process group torchrun sets up
    run_identity.py      the run tag, the run directory, the shards a run reads
    runs.py              a run on disk: its checkpoints, its metrics, its summary
    failure.py           why a launched trainer failed, in one message
    checkpoint.py        checkpoint files: saving, loading, pruning (atomic, complete only with DONE), CheckpointState
    checkpointer.py      the trainer's CheckpointManager: save(step) / load() of its TrainState, resume's rules
    outliers.py          llm.c's outlier detector for skipping updates (-sl / -sg)
    hellaswag.py         in-loop HellaSwag with llm.c's scorer
    plots.py             training.png
    trackers.py          train.loggers: TensorBoard and Weights & Biases, fed metrics.jsonl's numbers
    llmc.py              llm.c's command-line flags, defaults and launch lines
    mfu.py               GPU peaks for model FLOPs utilization
"""
