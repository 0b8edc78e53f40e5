"""The `gpt2train` command line: the library's commands; the console script adds `eval` (evals/cli.py)
and `pipeline` (pipelines/cli.py).

    gpt2train prepare --source ../shared/data/edu-mini --out data/prepared --shard-size 1000000
    gpt2train prepare --source hub --name sample-10BT --files 2 --out data/edu_fineweb10B
    gpt2train verify data/prepared                      # check every shard against its sidecar
    gpt2train train --config tiny [-b 8 -x 100]         # = python -m gpt2train.train (llm.c's flags too)
    gpt2train pipeline --config tiny [--stale-only]   # the whole chain; added by pipelines/cli.py
    gpt2train config --config gpt2_124m --set shards.shard_size=1000   # print the resolved config
    gpt2train export data/runs/tiny-<hash>/checkpoints/step_00000040 exports/tiny-40   # Hugging Face dir
    gpt2train lineage data/reports/<checkpoint>/      # walk any artifact back to the corpus files
    gpt2train sample data/exports/<checkpoint> --prompt "Hello" -n 3   # text from a checkpoint or HF dir
    gpt2train eval ./gpt2 --out reports/gpt2 --set evals.limit=100   # any HF GPT-2 scored; added by evals/cli.py

Errors a user can fix (bad config, missing file, unreachable Hub, full disk) print one
clear line and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from gpt2train.config import config_to_dict, load_config
from gpt2train.errors import Gpt2TrainError
from gpt2train.train import add_train_args
from gpt2train.train import main as train_main


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", help="a shipped preset (gpt2train/configs/*.yaml) or a YAML path; default: tiny")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value; repeatable (e.g. --set shards.shard_size=5000000)")


def load_from_args(args: argparse.Namespace, extra: list[str] = ()):
    return load_config(args.config, list(args.overrides) + list(extra))


def cmd_prepare(args: argparse.Namespace) -> None:
    from gpt2train.data.stage import prepare

    extra = []
    if args.source:
        extra.append(f"corpus.source={args.source}")
    for flag, key in (("dataset", "corpus.dataset"), ("name", "corpus.name"), ("revision", "corpus.revision"),
                      ("files", "corpus.files"), ("documents", "corpus.max_documents_per_file"),
                      ("shard_size", "shards.shard_size"), ("tokenizer", "shards.tokenizer"),
                      ("prefix", "shards.prefix"), ("threads", "shards.threads")):
        if getattr(args, flag) is not None:
            extra.append(f"{key}={getattr(args, flag)}")
    cfg = load_from_args(args, extra)
    if not any(o.startswith("data_dir=") for o in args.overrides):
        # Downloads and corpus records go next to the shards, unless data_dir was set explicitly.
        cfg.data_dir = str(Path(args.out).resolve().parent)
    result = prepare(cfg, args.out, progress=not args.quiet)
    print(f"wrote {len(result.shards)} shard(s), {result.tokens:,} tokens from {result.documents:,} documents "
          f"to {result.out_dir} ({result.tokens_per_second / 1e6:.2f}M tokens/s)")
    for s in result.shards:
        print(f"  {s['file']}  {s['tokens']:>12,} tokens  sha256 {s['sha256'][:16]}…")


def cmd_verify(args: argparse.Namespace) -> None:
    from gpt2train.data.shard_writer import load_sidecar
    from gpt2train.data.shards import validate_shard

    paths = []
    for p in map(Path, args.paths):
        paths += sorted(p.glob("*.bin")) if p.is_dir() else [p]
    if not paths:
        raise Gpt2TrainError(f"no .bin shards found in {', '.join(args.paths)}")
    bad = 0
    for path in paths:
        try:
            expected = load_sidecar(path).get("sha256")
        except Gpt2TrainError:
            expected = None
        checks = validate_shard(path, expected, record=True)  # a shard found intact is not hashed again by the trainer
        failed = [c for c in checks if not c.passed]
        bad += bool(failed)
        status = "ok" if not failed else "FAILED " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        print(f"{path}: {status}")
    if bad:
        raise Gpt2TrainError(f"{bad} of {len(paths)} shard(s) failed validation; regenerate them "
                             f"(`gpt2train pipeline` or `gpt2train prepare`)")
    print(f"all {len(paths)} shard(s) valid")


def cmd_export(args: argparse.Namespace) -> None:
    from gpt2train.export.hf_export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.out)
    v = result.verification
    print(f"exported {args.checkpoint} (step {result.step}) to {result.out_dir}")
    print(f"  verified: transformers loads it; logits max |diff| {v['logits_max_abs_diff']:.2e} "
          f"(<= {v['logits_tolerance']:g}); tokenizer == tiktoken on {v['tokenizer_texts']} texts")


def cmd_sample(args: argparse.Namespace) -> None:
    import torch

    from gpt2train.sample import sample
    from gpt2train.weights import load_model

    model, what = load_model(args.source)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"# {what}; seed {args.seed}, temperature {args.temperature}, top-k {args.top_k}", file=sys.stderr)
    texts = sample(model.to(device), args.prompt, args.num_samples, args.tokens, args.temperature,
                   args.top_k or None, args.seed, device)
    for i, text in enumerate(texts):
        print(f"--- sample {i} ---\n{text}" if args.num_samples > 1 else text)


def cmd_lineage(args: argparse.Namespace) -> None:
    from gpt2train.lineage.format import format_lineage
    from gpt2train.lineage.walk import walk_lineage

    nodes = walk_lineage(args.path, rehash=not args.no_rehash, progress=not args.quiet)
    print(format_lineage(nodes))
    bad = [n for n in nodes if not n.ok]
    if bad:
        raise Gpt2TrainError(f"{len(bad)} artifact(s) in the chain no longer match their recorded hashes "
                             f"(marked MISMATCH/MISSING above); regenerate them")


def cmd_config(args: argparse.Namespace) -> None:
    print(json.dumps(config_to_dict(load_from_args(args)), indent=2))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gpt2train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = ap.add_subparsers(dest="command", required=True)
    ap.subcommands = sub  # for evals/cli.py and pipelines/cli.py

    p = sub.add_parser("prepare", help="corpus -> llm.c token shards (llm.c's exact layout)")
    add_config_args(p)
    p.add_argument("--source", help="'hub', or a local mirror / folder / file / glob of .parquet/.jsonl/.txt")
    p.add_argument("--dataset", help="Hub dataset repo (default HuggingFaceFW/fineweb-edu)")
    p.add_argument("--name", help="Hub config, e.g. sample-10BT, sample-100BT")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit sha)")
    p.add_argument("--files", type=int, help="only the first N source files")
    p.add_argument("--documents", type=int, help="only the first N documents of each file")
    p.add_argument("--out", required=True, help="output folder for the shards")
    p.add_argument("--shard-size", type=int, help="tokens per shard (default 100,000,000 as llm.c)")
    p.add_argument("--tokenizer", help="tiktoken encoding (gpt2)")
    p.add_argument("--prefix", help="shard file prefix (default edu_fineweb)")
    p.add_argument("--threads", type=int, help="tokenizer threads (default: all cores)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("verify", help="validate shards: header, size, token range, sha256 vs sidecar")
    p.add_argument("paths", nargs="+", help="shard files or folders")
    p.set_defaults(func=cmd_verify)

    # Listed here for --help; `main` hands its command line to gpt2train/train.py, whose flags (llm.c's
    # included) argparse could not take as a subcommand's.
    p = sub.add_parser("train", help="train GPT-2 on the token shards (torchrun -m gpt2train.train for DDP); "
                                     "llm.c's flags too", add_help=False)
    add_train_args(p)

    p = sub.add_parser("export", help="a checkpoint -> a verified Hugging Face GPT2LMHeadModel directory")
    p.add_argument("checkpoint", help="a complete checkpoint directory (…/checkpoints/step_XXXXXXXX)")
    p.add_argument("out", help="output directory (replaced atomically if it exists)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sample", help="text from a checkpoint, an export, a Hugging Face GPT-2 dir or an llm.c .bin")
    p.add_argument("source", help="a checkpoint dir (…/checkpoints/step_XXXXXXXX), an export or save_pretrained dir, "
                                  "a Hub id hf:<owner>/<name>, or an llm.c model file (gpt2_124M.bin)")
    p.add_argument("--prompt", default="", help="text to continue (default: none, from <|endoftext|>)")
    p.add_argument("-n", "--num-samples", type=int, default=1)
    p.add_argument("--tokens", type=int, default=64, help="new tokens per sample (default 64, train.sample_tokens)")
    p.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    p.add_argument("--top-k", type=int, default=40, help="0: no top-k (default 40, as training's samples)")
    p.add_argument("--seed", type=int, default=1337, help="sample i uses seed+i (default 1337, train.seed)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("lineage", help="print an artifact's chain back to the corpus, re-hashing each file")
    p.add_argument("path", help="an eval report dir, an export dir, a checkpoint dir, a shard (.bin) or a corpus record")
    p.add_argument("--no-rehash", action="store_true", help="print the recorded chain without re-hashing files")
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("config", help="print the resolved config")
    add_config_args(p)
    p.set_defaults(func=cmd_config)
    return ap


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run a subcommand. `parser` lets the console script (pipelines/cli.py) add `eval` and the Dagster
    `pipeline` command on top (the library itself imports neither evals/ nor Dagster)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not sys.stderr.isatty():
        # Progress bars only on a terminal: in a log file or a captured stream every refresh is one more
        # line. Ours ask tqdm to decide (disable=None); a bar that passes no `disable` of its own (those of
        # huggingface_hub and datasets) follows TQDM_DISABLE, here and in what this process starts.
        # lm-eval's pass their own and still draw.
        os.environ.setdefault("TQDM_DISABLE", "1")
    if next((a for a in argv if not a.startswith("-")), None) == "train":
        return train_main(argv[argv.index("train") + 1:], prog="gpt2train train")
    args = (parser or build_parser()).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Dagster's SQLite schema checks
    try:
        args.func(args)
    except Gpt2TrainError as e:
        print(f"gpt2train {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
