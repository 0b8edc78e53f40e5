"""llm.c's `dev/data/fineweb.py` shard writer, re-implemented as a reference and a baseline.

The same algorithm as karpathy/llm.c's script (a `multiprocessing.Pool(max(1, cpu_count-2))`,
`imap` of one document at a time with chunksize 16, `[eot] + encode_ordinary(text)` per
document, a preallocated shard buffer, shards written with `write_datafile(...tolist())`),
fed from a list of texts instead of `datasets.load_dataset`. Used by:

- tests/test_prepare.py: our shards must be byte-identical to what this writes;
- bench/tokenize.py: the baseline our writer's throughput is compared against.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Iterable

import numpy as np

_enc = None


def _init_worker(name: str) -> None:
    global _enc
    import tiktoken

    _enc = tiktoken.get_encoding(name)


def _tokenize(text: str) -> np.ndarray:
    tokens = [_enc._special_tokens["<|endoftext|>"]]  # the special <|endoftext|> token delimits all documents
    tokens.extend(_enc.encode_ordinary(text))
    tokens_np = np.array(tokens)
    assert (0 <= tokens_np).all() and (tokens_np < 2**16).all(), "token dictionary too large for uint16"
    return tokens_np.astype(np.uint16)


def _write_datafile(filename: str, toks: list[int]) -> None:
    header = np.zeros(256, dtype=np.int32)
    header[0] = 20240520
    header[1] = 1
    header[2] = len(toks)
    toks_np = np.array(toks, dtype=np.uint16)
    with open(filename, "wb") as f:
        f.write(header.tobytes())
        f.write(toks_np.tobytes())


def llmc_write_shards(texts: Iterable[str], out_dir: str, shard_size: int, name: str = "edu_fineweb",
                      nprocs: int | None = None) -> list[str]:
    """Write shards exactly as llm.c's fineweb.py main loop does; returns the file names."""
    os.makedirs(out_dir, exist_ok=True)
    nprocs = nprocs or max(1, os.cpu_count() - 2)  # llm.c: don't hog the entire system
    written = []
    with mp.Pool(nprocs, initializer=_init_worker, initargs=("gpt2",)) as pool:
        shard_index = 0
        all_tokens_np = np.empty((shard_size,), dtype=np.uint16)
        token_count = 0
        for tokens in pool.imap(_tokenize, texts, chunksize=16):
            if token_count + len(tokens) < shard_size:
                all_tokens_np[token_count : token_count + len(tokens)] = tokens
                token_count += len(tokens)
            else:
                split = "val" if shard_index == 0 else "train"
                filename = os.path.join(out_dir, f"{name}_{split}_{shard_index:06d}.bin")
                remainder = shard_size - token_count
                all_tokens_np[token_count : token_count + remainder] = tokens[:remainder]
                _write_datafile(filename, all_tokens_np.tolist())
                written.append(filename)
                shard_index += 1
                all_tokens_np[0 : len(tokens) - remainder] = tokens[remainder:]
                token_count = len(tokens) - remainder
        if token_count != 0:
            split = "val" if shard_index == 0 else "train"
            filename = os.path.join(out_dir, f"{name}_{split}_{shard_index:06d}.bin")
            _write_datafile(filename, all_tokens_np[:token_count].tolist())
            written.append(filename)
    return written
