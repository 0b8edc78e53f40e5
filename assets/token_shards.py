"""The `token_shards` asset: GPT-2 tokens of one corpus file in llm.c `.bin` shards.

Wraps `gpt2train.data.stage.materialize_token_shards` (partition layout, see
gpt2train/data/shard_writer.py), and the four shard checks of `gpt2train.data.shards.validate_shard`
as Dagster asset checks (one op, one read of each shard for all four), run after every materialization
and runnable on their own to catch a shard corrupted later. A partition's shards are written under the writer lock of its
manifest (gpt2train/locks.py): a second run of the same partition is refused, naming the first.
Its metadata says how much of the corpus validation takes (`val_share`, `validation`): the library logs
a notice when that is a whole source file or more than 10% of the tokens.
"""

import warnings

import dagster as dg

from assets.manifests import SHARD_MANIFEST, record_manifests
from assets.partitions import corpus_files
from gpt2train.config import Config
from gpt2train.data.stage import materialize_token_shards
from gpt2train.fileio import read_json
from gpt2train.data.shard_writer import ValidationSplit, shards_code_version, validation_notice
from gpt2train.layout import shard_partition_manifest, shards_dir
from gpt2train.data.shards import validate_shard

# Partitioned asset checks are a "preview" feature in dagster 1.13: they are what lets a
# check run for one partition without rematerializing it, so we use them and silence the notice.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=Warning)

SHARD_CHECKS = {
    "header": "Every shard starts with llm.c's header: magic 20240520, version 1.",
    "size_matches_header": "Every shard's size is 1024 + 2 x (token count in its header) bytes.",
    "tokens_in_vocab": "Every token id is < 50257 (GPT-2's vocabulary).",
    "sha256_matches_sidecar": "Every shard's sha256 equals the one its lineage sidecar recorded.",
}


def validation_text(val: dict, cfg: Config) -> str:
    """The validation split in words, for the partition's metadata: the notice the library logs
    (gpt2train/data/shard_writer.py validation_notice) when there is one; while files of the corpus are
    still to be sharded, the share of what is sharded so far."""
    split = ValidationSplit(val["val_tokens"], val["total_tokens"], val["whole_files"], val["files"], "partition")
    if val["files_sharded"] < val["files_in_corpus"]:
        return (f"validation takes {split.share:.1%} of the tokens sharded so far ({split.val_tokens:,} of "
                f"{split.total_tokens:,}, {val['files_sharded']} of the corpus's {val['files_in_corpus']} source "
                f"files); the corpus's share is known once every file is sharded")
    return validation_notice(split, cfg) or (f"validation takes {split.share:.1%} of the corpus's tokens: "
                                             f"{split.val_tokens:,} of {split.total_tokens:,} in {split.files} "
                                             f"source file(s)")


def build_token_shards_asset(cfg: Config) -> list:
    @dg.asset(
        name="token_shards",
        partitions_def=corpus_files,
        deps=[dg.AssetDep("corpus", partition_mapping=dg.IdentityPartitionMapping())],
        code_version=shards_code_version(cfg),
        group_name="data",
        kinds={"numpy"},
        description="GPT-2 BPE tokens (tiktoken, <|endoftext|> before each document) of one corpus file, "
                    "in llm.c .bin shards of shards.shard_size tokens with lineage sidecars.",
    )
    def token_shards(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        out = shards_dir(cfg.data_dir)
        # The corpus is every corpus_files partition: the validation share is the corpus's once all are sharded.
        manifest = materialize_token_shards(cfg, context.partition_key,
                                            corpus_keys=context.instance.get_dynamic_partitions(corpus_files.name))
        record_manifests(cfg, context.instance, (SHARD_MANIFEST,))  # training_run reads every shard through it
        val = manifest["validation"]
        return dg.MaterializeResult(
            data_version=dg.DataVersion(manifest["data_version"]),
            metadata={
                "shards": dg.MetadataValue.int(len(manifest["shards"])),
                "tokens": dg.MetadataValue.int(manifest["tokens"]),
                "documents": dg.MetadataValue.int(manifest["documents"]),
                "holds_val_shard": manifest["is_val_file"],
                # The share of the corpus's tokens that validation takes (never trained on), over the files
                # sharded when this partition finished: the corpus's own once every file is.
                "val_share": dg.MetadataValue.float(round(val["share"], 6)),
                "validation": validation_text(val, cfg),
                "source_sha256": manifest["source"]["sha256"],
                "tokens_per_second": dg.MetadataValue.float(manifest["tokens"] / max(manifest["seconds"], 1e-9)),
                "files": dg.MetadataValue.md("\n".join(
                    f"- `{s['file']}`: {s['tokens']:,} tokens, sha256 `{s['sha256'][:16]}…`"
                    for s in manifest["shards"])),
                "dir": dg.MetadataValue.path(str(out)),
                "manifest": dg.MetadataValue.path(str(shard_partition_manifest(out, context.partition_key))),
                "code_version": manifest["code_version"],
                "git_commit": manifest["git_commit"] or "",
            },
        )

    # One check op for the four checks: validate_shard runs them in one read of each shard, and each
    # check's result is reported under its own name. A shard that passes all four is recorded as verified
    # (gpt2train/data/shards.py), so the trainer does not hash it again.
    @dg.multi_asset_check(
        name="token_shards_checks",  # not the `shard_checks` job's name: ops and jobs share one namespace
        specs=[dg.AssetCheckSpec(name, asset="token_shards", description=description, partitions_def=corpus_files,
                                 blocking=True) for name, description in SHARD_CHECKS.items()],
    )
    def shard_checks(context: dg.AssetCheckExecutionContext):
        out = shards_dir(cfg.data_dir)
        manifest = read_json(shard_partition_manifest(out, context.partition_key), "partition manifest")
        failures: dict[str, list[str]] = {name: [] for name in SHARD_CHECKS}
        for shard in manifest["shards"]:
            results = {c.name: c for c in validate_shard(out / shard["file"], expected_sha256=shard["sha256"],
                                                         record=True)}
            for name in SHARD_CHECKS:
                if name not in results:  # a renamed rule must fail loudly, never pass by absence
                    failures[name].append(f"{shard['file']}: validate_shard ran no {name!r} check")
                elif not results[name].passed:
                    failures[name].append(f"{shard['file']}: {results[name].detail}")
        for name, failed in failures.items():
            if not manifest["shards"]:
                failed.append("the partition manifest lists no shards")
            yield dg.AssetCheckResult(
                asset_key="token_shards", check_name=name, passed=not failed,
                metadata={"shards_checked": len(manifest["shards"]),
                          "failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failed) or "none")},
            )

    checks = [shard_checks]
    return [token_shards, *checks]
