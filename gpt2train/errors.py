"""The exceptions raised for problems a user can fix: Gpt2TrainError and its subclasses.

Here: Gpt2TrainError, ConfigError, DataError, TrainingDiverged, KernelCompileError. Next to the
code that raises them:

    gpt2train/training/checkpoint.py   CheckpointDiskFull (a DataError): the disk filled during a save
    gpt2train/locks.py                 ArtifactBusy: another process holds the artifact's writer lock
    gpt2train/failpoints.py            InjectedFault: a test's failpoint with the action `raise`
    pipelines/runner.py                PipelineFailed: some partitions failed (carries the run summary)

Every message names the file or field at fault and says what to do; the CLI prints any
Gpt2TrainError without a traceback, Dagster shows it as the run failure.
"""


class Gpt2TrainError(Exception):
    """A problem with the user's input, config or environment (not a bug in gpt2train)."""


class ConfigError(Gpt2TrainError):
    """A config file or `--set` override is invalid."""


class DataError(Gpt2TrainError):
    """A corpus file, download or token shard is missing, malformed or cannot be written."""


class TrainingDiverged(Gpt2TrainError):
    """The loss or gradients stayed NaN/Inf for train.max_nonfinite_steps steps in a row."""


class KernelCompileError(Gpt2TrainError):
    """A Triton kernel does not compile (or fits no config) for this machine's GPU."""
