"""Shard-writer throughput and peak memory: ours vs llm.c's approach vs tiktoken's ceiling.

    TIKTOKEN_CACHE_DIR=../shared/tiktoken python bench/tokenize.py [--repeat 10] [--shard-size 100000000]

Builds a corpus of `--repeat` copies of ../shared/data/edu-mini (10 copies = 30 parquet
files, 40.8 M tokens) in a temp folder, then runs each variant in its own process (so
peak RSS is its own, pool workers included):

- ours      `gpt2train.data.shard_writer.write_shards` (stream layout, all cores, full I/O + sidecars)
- llm.c     bench/llmc_fineweb.py: llm.c's Pool(max(1, cpu-2)) + imap(chunksize=16) + .tolist() writer
- ceiling   tiktoken's `encode_ordinary_batch` over all cores, texts already in memory, no I/O

Goal (issue #2): ours >= 0.85x the ceiling (so >= 1.7x llm.c), peak RSS < 1.5 GB.

Memory flat in file size (issue 17), each case in its own process, peak RSS its VmHWM:

    python bench/tokenize.py --memory [--baseline-repo /tmp/base] [--pairs 3]

- read-parquet     one ~400 MB parquet file (42 row groups, generated) read through the corpus reader
- prepare-parquet  the same file through `write_shards` (read, tokenize, write shards): --full only
- long-document    one 50 MB .txt with no whitespace through `write_shards`: refused by default
  (corpus.max_document_chars), tokenized in pieces with corpus.oversize_documents=split

How `gpt2train prepare` scales with cores (issue 26), A/B, each run in its own process:

    python bench/tokenize.py --prepare [--baseline-repo /tmp/base] [--pairs 5] [--shard-size 10000000]

runs `gpt2train.data.stage.prepare` on edu-mini x `--repeat`, its documents cut to `--doc-chars` (FineWeb-Edu's
mean length), profiled thread by thread (bench/cpu_monitor.py), after one uncounted warm-up run of each. It prints
tokens per CPU-second, the share of wall time with every core busy, the CPU of each stage, and what the model in
the README ("How `prepare` scales with cores") predicts for 8, 16 and 64 cores.

`--baseline-repo` is another checkout of gpt2train (`git worktree add /tmp/base <commit>`): each case
then runs with it and with this one in alternating order, `--pairs` times, and the median of the paired
ratios is printed (the run-to-run noise of a shared machine cancels within a pair); the long document,
whose baseline runs for minutes, once each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import string
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# This file is named tokenize.py (as the issue asks), which shadows the standard library's
# `tokenize` for anything imported with bench/ first on sys.path: put the repo there instead.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

EDU_MINI = REPO.parent / "shared" / "data" / "edu-mini" / "sample" / "10BT"


def build_corpus(dest: Path, repeat: int, doc_chars: int | None = None) -> Path:
    """`repeat` copies of edu-mini; with `doc_chars`, every document cut (before whitespace, as
    gpt2train/data/tokenizer.py split_document cuts) into pieces of at most that many characters."""
    root = dest / "corpus" / "sample" / "10BT"
    root.mkdir(parents=True)
    for f in sorted(EDU_MINI.glob("*.parquet")):
        if doc_chars:
            import pyarrow as pa
            import pyarrow.parquet as pq

            from gpt2train.data.tokenizer import split_document

            texts = pq.read_table(f, columns=["text"]).column("text").to_pylist()
            pieces = [p for t in texts for p in split_document(t, doc_chars)]
            pq.write_table(pa.table({"text": pieces}), dest / f.name, row_group_size=1000)
            f = dest / f.name
        for r in range(repeat):
            shutil.copyfile(f, root / f"{r:03d}_{f.name}")
    return dest / "corpus"


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # largest single child
    return (own + children) / 1024


def iter_texts(corpus: Path):
    import pyarrow.parquet as pq

    for f in sorted(corpus.rglob("*.parquet")):
        for rb in pq.ParquetFile(f).iter_batches(batch_size=1024, columns=["text"]):
            yield from rb.column(0).to_pylist()


def run_variant(variant: str, corpus: Path, out: Path, shard_size: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if variant == "ours":
        from gpt2train.config import Config
        from gpt2train.data.corpus import fetch_source_file, list_source_files
        from gpt2train.data.shard_writer import write_shards

        cfg = Config()
        cfg.corpus.source = str(corpus)
        cfg.shards.shard_size = shard_size
        t0 = time.perf_counter()
        records = [fetch_source_file(cfg.corpus, f.key, out) for f in list_source_files(cfg.corpus)]
        result = write_shards(records, out / "shards", cfg, progress=False)
        seconds, tokens = time.perf_counter() - t0, result.tokens
    elif variant == "llmc":
        from bench.llmc_fineweb import llmc_write_shards

        t0 = time.perf_counter()
        files = llmc_write_shards(iter_texts(corpus), str(out / "shards"), shard_size)
        seconds = time.perf_counter() - t0
        tokens = sum((os.path.getsize(f) - 1024) // 2 for f in files)
    elif variant == "ceiling":
        import tiktoken

        texts = list(iter_texts(corpus))
        enc = tiktoken.get_encoding("gpt2")
        t0 = time.perf_counter()
        encoded = enc.encode_ordinary_batch(texts, num_threads=os.cpu_count())
        seconds = time.perf_counter() - t0
        tokens = sum(len(e) for e in encoded) + len(texts)  # + one <|endoftext|> per document
    else:
        raise SystemExit(f"unknown variant {variant}")
    return {"variant": variant, "tokens": tokens, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


# ---------------------------------------------------------------- memory flat in file size (issue 17)

BIG_PARQUET_ROW_GROUPS = 42  # as the file issue 17 measured (396 MB, 42 row groups)
LONG_DOCUMENT_CHARS = 50_000_000
REPO_UNDER_TEST = REPO  # the checkout a --memory-case child runs


def build_big_parquet(dest: Path, row_groups: int = BIG_PARQUET_ROW_GROUPS) -> Path:
    """~400 MB of zstd parquet (FineWeb's codec): edu-mini's documents, each made unique by a prefix (so
    neither the dictionary nor the codec folds repeats), 1,472 per row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [t for f in sorted(EDU_MINI.glob("*.parquet"))
             for t in pq.read_table(f, columns=["text"]).column(0).to_pylist()]
    path = dest / "big.parquet"
    with pq.ParquetWriter(path, pa.schema([("text", pa.string())]), compression="zstd", use_dictionary=False) as w:
        for g in range(row_groups):
            rows = [f"{g}.{k}: {texts[k % len(texts)]}" for k in range(2 * len(texts))]
            w.write_table(pa.table({"text": rows}), row_group_size=len(rows))
    return path


def build_long_document(dest: Path, chars: int = LONG_DOCUMENT_CHARS) -> Path:
    """One .txt document of random lowercase letters: no whitespace, so GPT-2's pre-tokenizer sees one
    50 M-character word, tiktoken's worst case (~50 bytes of memory per character)."""
    path = dest / "long.txt"
    path.write_text("".join(random.Random(0).choices(string.ascii_lowercase, k=chars)))
    return path


def memory_case(case: str, file: Path, out: Path, split: bool) -> dict:
    """Child process: one case with whichever gpt2train is first on sys.path; what it did, as JSON."""
    from gpt2train.config import Config
    from gpt2train.data.corpus import fetch_source_file, iter_document_batches
    from gpt2train.data.shard_writer import write_shards
    from gpt2train.errors import Gpt2TrainError

    import gpt2train

    assert Path(gpt2train.__file__).is_relative_to(REPO_UNDER_TEST), (gpt2train.__file__, REPO_UNDER_TEST)
    t0 = time.perf_counter()
    if case == "read-parquet":
        documents = sum(len(batch) for batch in iter_document_batches(file, "text", 512))
        return {"documents": documents, "seconds": time.perf_counter() - t0}
    cfg = Config()
    cfg.corpus.source, cfg.shards.shard_size = str(file), 100_000_000
    if split:
        cfg.corpus.oversize_documents = "split"
    try:
        result = write_shards([fetch_source_file(cfg.corpus, file.name, out)], out / "shards", cfg, progress=False)
    except Gpt2TrainError as e:
        return {"refused": str(e)[:160], "seconds": time.perf_counter() - t0}
    return {"tokens": result.tokens, "seconds": time.perf_counter() - t0}


def vm_hwm_mb(pid: int | str = "self") -> float:
    """A process's peak resident memory (VmHWM) in MB. Not getrusage's ru_maxrss: after fork + exec that
    keeps the parent's RSS at the fork as a floor, so every case would read at least the parent's size."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def run_memory_case(repo: Path, case: str, file: Path, tmp: Path, split: bool = False, timeout: float = 900) -> dict:
    """One case in a fresh process running `repo`'s gpt2train; its peak RSS, killed at `timeout`."""
    out = tmp / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cmd = [sys.executable, __file__, "--memory-case", case, "--file", str(file), "--out", str(out),
           "--repo", str(repo)] + (["--split"] if split else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(repo)})
    peak, deadline = 0.0, time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:  # polled for a case killed at the timeout
        try:
            peak = max(peak, vm_hwm_mb(proc.pid))
        except (OSError, StopIteration):  # exiting
            pass
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
        return {"timed_out": timeout, "peak_rss_mb": peak}
    output, errors = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{case} with {repo} failed:\n{errors[-3000:]}")
    result = json.loads(output.strip().splitlines()[-1])
    return {**result, "peak_rss_mb": max(peak, result["peak_rss_mb"])}


def checkouts(args) -> dict[str, Path]:
    """This checkout, and with --baseline-repo the one to compare it with."""
    return {"this": REPO, **({"baseline": Path(args.baseline_repo).resolve()} if args.baseline_repo else {})}


def memory_main(args) -> None:
    repos = checkouts(args)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start (others' processes included)")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        tmp = Path(tmp)
        # Built in a child process: the 700 MB this takes would otherwise stay in this one's RSS.
        subprocess.run([sys.executable, __file__, "--build-memory-inputs", str(tmp)], check=True)
        big, long_doc = tmp / "big.parquet", tmp / "long.txt"
        print(f"{big.name}: {big.stat().st_size / 2**20:.0f} MB, {BIG_PARQUET_ROW_GROUPS} row groups; "
              f"{long_doc.name}: {LONG_DOCUMENT_CHARS:,} characters, no whitespace")
        cases = [("read-parquet", big, False)] + ([("prepare-parquet", big, False)] if args.full else []) + \
                [("long-document", long_doc, False)]
        for case, file, split in cases:
            runs: dict[str, list[dict]] = {name: [] for name in repos}
            # The long document's baseline runs for minutes and its ratio dwarfs any noise: one pair.
            pairs = args.pairs if len(repos) > 1 and case != "long-document" else 1
            for pair in range(pairs):
                order = list(repos) if pair % 2 == 0 else list(reversed(repos))  # A/B, then B/A, ...
                for name in order:
                    runs[name].append(run_memory_case(repos[name], case, file, tmp, split, args.case_timeout))
            _print_memory_case(case, runs)
        # Split mode exists only in this checkout: no pair to compare with.
        _print_memory_case("long-document, split", {"this": [run_memory_case(REPO, "long-document", long_doc, tmp,
                                                                               True, args.case_timeout)]})


def _print_memory_case(case: str, runs: dict[str, list[dict]]) -> None:
    for name, trials in runs.items():
        rss = " ".join(f"{t['peak_rss_mb']:.0f}" for t in trials)
        last = trials[-1]
        what = last.get("refused") or (f"killed after {last['timed_out']:.0f} s" if "timed_out" in last
                                       else f"{statistics.median(t['seconds'] for t in trials):.1f} s")
        print(f"{case:<22} {name:<9} peak RSS MB {rss:<22} {what}")
    if len(runs) == 2:
        ratios = [t["peak_rss_mb"] / b["peak_rss_mb"] for t, b in zip(runs["this"], runs["baseline"])]
        print(f"{case:<22} this/baseline peak RSS, median of {len(ratios)} paired ratios: "
              f"{statistics.median(ratios):.2f}x ({' '.join(f'{r:.2f}' for r in ratios)})")


# ---------------------------------------------------------------- prepare scales with cores (issue 26)

# Thread name prefixes (gpt2train/data/feed.py, shard_writer.py, tokenizer.py) -> the stage they do.
PREPARE_ROLES = {"tokenize": "tokenize", "read-ahead": "read", "fetch": "fetch", "shard-finish": "finish",
                 "MainThread": "main"}
PREDICT_CORES = (2, 8, 16, 64)


def prepare_run(corpus: Path, out: Path, shard_size: int) -> dict:
    """One `gpt2train prepare` of `corpus` (the checkout first on sys.path), profiled thread by thread."""
    import gpt2train
    from bench.cpu_monitor import CpuMonitor
    from gpt2train.config import Config
    from gpt2train.data.stage import prepare

    cfg = Config()
    cfg.data_dir = str(out / "data")
    cfg.corpus.source = str(corpus)
    cfg.shards.shard_size = shard_size
    monitor = CpuMonitor(interval=0.01, mark="tokenize").start()
    result = prepare(cfg, out / "prepared", progress=False)
    profile = monitor.stop()
    return {"tokens": result.tokens, "documents": result.documents, "profile": profile.to_dict(),
            "gil_per_document": tokenizer_gil_seconds_per_document(),
            "code": str(Path(gpt2train.__file__).parent.parent)}


def tokenizer_gil_seconds_per_document() -> float:
    """What a tokenizer thread holds the GIL for per document, whatever its length: everything but tiktoken's
    Rust encoder, which releases it. Timed on one thread as the whole per-document cost of one-character
    documents (an upper bound: it includes the encoder's own call), median of 3."""
    from gpt2train.data.tokenizer import DocumentEncoder

    docs = ["a"] * 100_000
    groups = [docs[i:i + 12] for i in range(0, len(docs), 12)]
    costs = []
    with DocumentEncoder("gpt2", 1) as encoder:
        for _ in range(3):
            t0 = time.thread_time()
            for g in groups:
                encoder._encode_chunk(g)
            costs.append((time.thread_time() - t0) / len(docs))
    return statistics.median(costs)


def prepare_model(run: dict) -> dict:
    """The figures the prediction is made of (README, "How `prepare` scales"), from one profiled run."""
    from bench.cpu_monitor import by_role

    prof, mark = run["profile"], run["profile"]["at_mark"]
    total, before = by_role(prof["threads"], PREPARE_ROLES), by_role(mark.get("threads", {}), PREPARE_ROLES)
    after = {role: total[role] - before.get(role, 0.0) for role in total}
    head = mark.get("wall", prof["wall"])  # wall time before the first token: nothing to spread over cores
    gil = after["read"] + after["main"] + run["gil_per_document"] * run["documents"]
    serial = {"the readers": after["read"], "main thread": after["main"], "shard finisher": after["finish"],
              "the GIL": gil}
    return {"tokens": run["tokens"], "documents": run["documents"], "wall": prof["wall"], "cpu": prof["cpu"],
            "busy_share": prof["busy_share"], "head": head, "cpu_after_head": prof["cpu"] - mark.get("cpu", prof["cpu"]),
            "serial": serial,
            "roles": total, "gil_per_document": run["gil_per_document"]}


def predicted_rate(model: dict, cores: int) -> tuple[float, str, float]:
    """(tokens/s, what binds, cores busy on average) on `cores` cores, for a corpus long enough that the
    head (start-up, the first file's fetch) is negligible: the larger of the CPU spread over every core
    and the busiest stage that cannot spread (one thread, or the GIL)."""
    bound, seconds = max(model["serial"].items(), key=lambda kv: kv[1])
    spread = model["cpu_after_head"] / cores
    wall = max(spread, seconds)
    return model["tokens"] / wall, ("every core" if spread >= seconds else bound), model["cpu_after_head"] / wall


def run_prepare_case(repo: Path, corpus: Path, tmp: Path, shard_size: int) -> dict:
    out = tmp / "prepare-out"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--prepare-run", "--repo", str(repo), "--corpus", str(corpus), "--out", str(out),
           "--shard-size", str(shard_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo)})
    if proc.returncode != 0:
        sys.exit(f"prepare with {repo} failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(run["code"]).resolve() != repo:
        sys.exit(f"the run meant for {repo} imported gpt2train from {run['code']}")
    return prepare_model(run)


def prepare_main(args) -> None:
    repos = checkouts(args)
    print(f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f} at the start")
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        tmp = Path(tmp)
        corpus = build_corpus(tmp, args.repeat, args.doc_chars or None)
        for repo in repos.values():  # warm-up, not counted: the corpus into the page cache, imports compiled
            run_prepare_case(repo, corpus, tmp, args.shard_size)
        runs: dict[str, list[dict]] = {name: [] for name in repos}
        for pair in range(args.pairs if len(repos) > 1 else 1):
            for name in (list(repos) if pair % 2 == 0 else list(reversed(repos))):  # A/B, then B/A, ...
                runs[name].append(run_prepare_case(repos[name], corpus, tmp, args.shard_size))
    first = runs["this"][0]
    cut = f", documents cut at {args.doc_chars:,} characters" if args.doc_chars else ""
    print(f"gpt2train prepare of edu-mini x{args.repeat}{cut} ({args.repeat * 3} files, {first['documents']:,} "
          f"documents, {first['tokens']:,} tokens, {first['tokens'] / first['documents']:,.0f} per document), "
          f"shard size {args.shard_size:,}; every figure the median of {len(runs['this'])} run(s)")
    med = lambda xs: statistics.median(xs)  # noqa: E731
    print(f"{'':<10}{'wall s':>8}{'M tok/s':>9}{'M tok/CPU-s':>13}{'all cores busy':>16}{'first token s':>15}"
          f"   CPU s by stage")
    for name, trials in runs.items():
        roles = {r: med([t["roles"][r] for t in trials]) for r in trials[0]["roles"]}
        print(f"{name:<10}{med([t['wall'] for t in trials]):>8.2f}"
              f"{med([t['tokens'] / t['wall'] for t in trials]) / 1e6:>9.2f}"
              f"{med([t['tokens'] / t['cpu'] for t in trials]) / 1e6:>13.2f}"
              f"{med([t['busy_share'] for t in trials]):>15.0%}{med([t['head'] for t in trials]):>15.2f}   "
              + " ".join(f"{r} {v:.2f}" for r, v in roles.items() if v >= 0.005))
    if len(runs) == 2:
        ratios = [t["wall"] / b["wall"] for t, b in zip(runs["this"], runs["baseline"])]
        print(f"this/baseline wall time, median of {len(ratios)} paired ratios: {med(ratios):.3f} "
              f"({' '.join(f'{r:.3f}' for r in ratios)})")
    per_document = med([t["gil_per_document"] for t in runs["this"]])
    print(f"a tokenizer thread holds the GIL for at most {per_document * 1e6:.1f} "
          f"µs per document (outside tiktoken's Rust encoder)")
    for name, trials in runs.items():
        serial = {k: med([t["serial"][k] for t in trials]) for k in trials[0]["serial"]}
        unattributed = med([t["cpu"] - sum(t["roles"].values()) for t in trials])
        print(f"{name}: CPU s after the first token {med([t['cpu_after_head'] for t in trials]):.2f}; of which cannot "
              f"spread over cores: " + ", ".join(f"{k} {v:.2f}" for k, v in serial.items())
              + f" (CPU s no thread was seen using: {unattributed:.2f})")
        for cores in PREDICT_CORES:
            rates = [predicted_rate(t, cores) for t in trials]
            bound = max(set(b for _, b, _ in rates), key=[b for _, b, _ in rates].count)
            print(f"  predicted on {cores:>2} cores: {med([r for r, _, _ in rates]) / 1e6:6.1f} M tokens/s, "
                  f"{med([c for _, _, c in rates]):4.1f} cores busy on average (bound: {bound})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10, help="copies of edu-mini (10 -> 40.8M tokens)")
    ap.add_argument("--shard-size", type=int, default=100_000_000)
    ap.add_argument("--trials", type=int, default=3,
                    help="runs per variant (median reported): this 2-core machine's speed varies ~30%% run to run")
    ap.add_argument("--memory", action="store_true", help="peak RSS on one big parquet file and one huge document")
    ap.add_argument("--baseline-repo",
                    help="with --memory or --prepare: another gpt2train checkout to compare with, A/B")
    ap.add_argument("--pairs", type=int, default=3, help="with --baseline-repo: A/B pairs per case")
    ap.add_argument("--full", action="store_true", help="with --memory: also tokenize the big parquet file")
    ap.add_argument("--case-timeout", type=float, default=900, help="with --memory: seconds before a case is killed")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--memory-case", help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--repo", help=argparse.SUPPRESS)
    ap.add_argument("--split", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--build-memory-inputs", help=argparse.SUPPRESS)
    ap.add_argument("--prepare", action="store_true",
                    help="gpt2train prepare, A/B with --baseline-repo: tokens per CPU-second, busy share, prediction")
    ap.add_argument("--doc-chars", type=int, default=5_600,
                    help="with --prepare: cut documents to at most this many characters (FineWeb-Edu's mean "
                         "document is ~1,280 tokens, ~5,600 characters; edu-mini's ~5,500 tokens); 0: as they are")
    ap.add_argument("--prepare-run", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO.parent / "shared" / "tiktoken"))

    if args.memory_case:  # child process of --memory: the checkout under test first on sys.path
        global REPO_UNDER_TEST
        REPO_UNDER_TEST = Path(args.repo).resolve()
        sys.path.insert(0, args.repo)
        result = memory_case(args.memory_case, Path(args.file), Path(args.out), args.split)
        print(json.dumps({**result, "peak_rss_mb": vm_hwm_mb()}))
        return
    if args.build_memory_inputs:
        build_big_parquet(Path(args.build_memory_inputs)), build_long_document(Path(args.build_memory_inputs))
        return
    if args.memory:
        memory_main(args)
        return
    if args.prepare_run:  # child process of --prepare: the checkout under test first on sys.path
        import bench.cpu_monitor  # noqa: F401 (this checkout's: a baseline's bench/ may predate it)

        sys.path.insert(0, args.repo)
        print(json.dumps(prepare_run(Path(args.corpus), Path(args.out), args.shard_size)))
        return
    if args.prepare:
        prepare_main(args)
        return

    if args.variant:  # child process: one variant, `--trials` times, JSON on the last line
        trials = [run_variant(args.variant, Path(args.corpus), Path(args.out), args.shard_size)
                  for _ in range(args.trials)]
        rates = sorted(t["tokens"] / t["seconds"] / 1e6 for t in trials)
        print(json.dumps({**trials[-1], "rates": rates, "median_rate": rates[len(rates) // 2],
                          "peak_rss_mb": peak_rss_mb()}))
        return

    with tempfile.TemporaryDirectory(prefix="bench-tokenize-") as tmp:
        corpus = build_corpus(Path(tmp), args.repeat)
        results = {}
        for variant in ("ceiling", "llmc", "ours"):
            out = Path(tmp) / variant
            proc = subprocess.run([sys.executable, __file__, "--variant", variant, "--corpus", str(corpus),
                                   "--out", str(out), "--shard-size", str(args.shard_size),
                                   "--trials", str(args.trials)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{variant} failed:\n{proc.stderr}")
            results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
            shutil.rmtree(out)

    ceiling, llmc, ours = (results[k] for k in ("ceiling", "llmc", "ours"))
    rate = {k: v["median_rate"] for k, v in results.items()}
    print(f"corpus: {ours['tokens']:,} tokens (edu-mini x{args.repeat}), shard size {args.shard_size:,}, "
          f"{os.cpu_count()} cores")
    print(f"{'variant':<34}{'M tokens/s (median)':>20}{'all trials':>22}{'peak RSS MB':>13}")
    names = {"ceiling": "ceiling: encode_ordinary_batch", "llmc": "llm.c fineweb.py approach",
             "ours": "gpt2train prepare (ours)"}
    for k in ("ceiling", "llmc", "ours"):
        r = results[k]
        trials = " ".join(f"{x:.2f}" for x in r["rates"])
        print(f"{names[k]:<34}{rate[k]:>20.2f}{trials:>22}{r['peak_rss_mb']:>13.0f}")
    print(f"ours / ceiling = {rate['ours'] / rate['ceiling']:.2f}x   (goal >= 0.85x)")
    print(f"ours / llm.c   = {rate['ours'] / rate['llmc']:.2f}x   (goal >= 1.7x)")
    print(f"ours peak RSS  = {ours['peak_rss_mb']:.0f} MB (goal < 1500 MB; llm.c approach {llmc['peak_rss_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
