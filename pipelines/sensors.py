"""`corpus_files_sensor`: registers each new source file as a partition and materializes it.

Adding a parquet file to a local corpus (or raising `corpus.files` for the Hub) adds one
`corpus_files` partition; the sensor requests `corpus` + `token_shards` for that key only.
"""

import dagster as dg

from assets.partitions import corpus_files, unregistered_source_files
from gpt2train.config import Config


def build_corpus_files_sensor(cfg: Config, job) -> dg.SensorDefinition:
    @dg.sensor(
        name="corpus_files_sensor",
        job=job,
        # Listing the Hub is one API call; once a minute is polite and quick enough.
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds a corpus_files partition for each new source file and materializes it.",
    )
    def corpus_files_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        _, new = unregistered_source_files(cfg, context.instance)
        return dg.SensorResult(
            dynamic_partitions_requests=[corpus_files.build_add_request(new)] if new else [],
            run_requests=[dg.RunRequest(run_key=f"corpus-file:{k}", partition_key=k) for k in new],
        )

    return corpus_files_sensor
