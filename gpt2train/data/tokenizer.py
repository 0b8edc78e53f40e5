"""GPT-2 BPE (tiktoken) and the multi-threaded document encoder that feeds the shard writer.

A document becomes `[<|endoftext|>] + encode_ordinary(text)` exactly as in llm.c's
`dev/data/fineweb.py`: the end-of-text token (50256) *opens* every document, and text that
happens to contain the string "<|endoftext|>" is encoded as ordinary text.

Speed: tiktoken's Rust core releases the GIL, so plain threads use every core with no
pickling (llm.c uses a process pool and pays for it). `encode_to_numpy` with no special
tokens allowed is `encode_ordinary` writing straight into a uint32 buffer, which spares
the Python-int list; `bench/tokenize.py` measures both against tiktoken's own batch API.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator, Sequence, TypeVar

import numpy as np

from gpt2train.errors import DataError

Tag = TypeVar("Tag")

# Encodings whose ranks are GPT-2's 50,257 tokens (r50k_base is the same table).
GPT2_ENCODINGS = ("gpt2", "r50k_base")
GPT2_VOCAB_SIZE = 50257
EOT_TOKEN = 50256

# Characters of text per thread-pool task (~60k tokens): the thread that hands tasks out and writes
# their tokens is a stage of `prepare` that does not spread over cores, and it spends tens of
# microseconds per task (submit, collect, write). 256k instead of 64k characters halved its CPU
# (0.32 -> 0.17 s per 40.8 M tokens, `python bench/tokenize.py --prepare`; README "How `prepare` scales
# with cores"). Small enough still that long and short documents balance across cores: the window holds
# `threads * 4` tasks. On this 2-core machine 16k-256k characters measured the same within noise.
TASK_CHARS = 256_000


def get_encoding(name: str):
    """The tiktoken encoding `name`, with errors that say how to get it offline."""
    import tiktoken

    if name not in GPT2_ENCODINGS:
        raise DataError(
            f"unknown tokenizer {name!r} in shards.tokenizer: llm.c's uint16 .bin shards hold GPT-2 "
            f"token ids, so use one of {', '.join(GPT2_ENCODINGS)}"
        )
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # tiktoken raises requests/urllib errors or ValueError on a bad cache
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "(unset)")
        raise DataError(
            f"could not load tiktoken encoding {name!r} ({type(e).__name__}: {e}). Offline, point "
            f"TIKTOKEN_CACHE_DIR at a folder holding its files (e.g. ../shared/tiktoken); "
            f"TIKTOKEN_CACHE_DIR is now {cache}"
        ) from e


def ranks_sha256(enc) -> str:
    """A hash of the tokenizer's merge ranks and special tokens: what lineage records.

    Two encodings with the same hash produce the same tokens for every text.
    """
    h = hashlib.sha256()
    for token_bytes, rank in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1]):
        h.update(rank.to_bytes(4, "little") + len(token_bytes).to_bytes(2, "little") + token_bytes)
    for name, rank in sorted(enc._special_tokens.items()):
        h.update(f"{name}={rank};".encode())
    return h.hexdigest()


# A cut between a non-whitespace character and a space or newline: GPT-2's pre-tokenizer regex
# ('s|'t|...| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+) never puts both in one piece (a piece
# is whitespace, or at most one leading space before non-whitespace), and looks ahead only past
# whitespace, so encoding the text on either side of such a cut gives the whole text's tokens.
_CUT_BEFORE = re.compile(r"(?<=\S)[ \n]")


def split_document(text: str, max_chars: int) -> list[str]:
    """`text` in pieces of at most `max_chars` characters whose tokens, concatenated, are the whole
    text's: each cut is the last one before a space or newline that follows non-whitespace. A
    stretch of `max_chars` characters with no such place is cut at `max_chars` (its tokens there
    differ from the whole text's: BPE sees the two halves of a word apart)."""
    pieces, start = [], 0
    while len(text) - start > max_chars:
        end = start + max_chars
        cuts = [m.start() for m in _CUT_BEFORE.finditer(text, start + 1, end + 1)]
        cut = cuts[-1] if cuts else end
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


class DocumentEncoder:
    """Encodes batches of documents on a thread pool into one uint16 token stream.

        with DocumentEncoder("gpt2") as encoder:
            stream = encoder.encode_batch(["first doc", "second doc"])  # (N,) uint16

    `split_chars`: a document longer than this is encoded in pieces (`split_document`), so
    tiktoken's memory (up to ~50 bytes per character of a whitespace-free piece) stays bounded.
    """

    def __init__(self, name: str = "gpt2", threads: int = 0, split_chars: int | None = None):
        self.enc = get_encoding(name)
        self.name = name
        self.split_chars = split_chars
        self.eot = self.enc.eot_token
        self.threads = threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tokenize")

    def __enter__(self) -> "DocumentEncoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def encode_document(self, text: str) -> np.ndarray:
        """Ordinary BPE tokens of one document as (n,) uint32, without the end-of-text token."""
        if self.split_chars is not None and len(text) > self.split_chars:
            return np.concatenate([self._encode_ordinary(piece) for piece in split_document(text, self.split_chars)])
        return self._encode_ordinary(text)

    def _encode_ordinary(self, text: str) -> np.ndarray:
        try:
            return self.enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
        except UnicodeEncodeError:
            # Lone surrogates (from JSON escapes, say): repaired the way encode_ordinary does,
            # so the tokens stay identical to llm.c's.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self.enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

    def _encode_chunk(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        parts = [self.encode_document(t) for t in texts]
        out = np.empty(sum(len(p) for p in parts) + len(parts), dtype=np.uint16)
        i = 0
        for p in parts:
            out[i] = self.eot
            out[i + 1 : i + 1 + len(p)] = p  # ranks < 50257 always fit uint16
            i += 1 + len(p)
        return out, len(texts)

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """`[eot] + tokens(doc)` for every doc, concatenated in order: (sum n_i + len(texts),) uint16."""
        parts = [tokens for tokens, _ in self.encode_stream([texts])]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint16)

    def encode_stream(self, batches: Iterable[Sequence[str]]) -> Iterator[tuple[np.ndarray, int]]:
        """Encode a stream of document batches; yields (uint16 tokens, documents) in input order."""
        for tokens, n_docs, _ in self.encode_tagged((None, texts) for texts in batches):
            yield tokens, n_docs

    def encode_tagged(self, batches: Iterable[tuple[Tag, Sequence[str]]]) -> Iterator[tuple[np.ndarray, int, Tag]]:
        """Encode a stream of (tag, document batch); yields (uint16 tokens, documents, tag) in input order,
        each piece of output from batches of one tag (the source file, in gpt2train/data/shard_writer.py).

        Documents are grouped into tasks of about TASK_CHARS characters and kept `threads * 4` tasks in
        flight across batch boundaries, and across tags: no barrier per batch or per file (where one long
        document, or a file's end, would idle the other cores), and memory bounded by the window.
        """
        window: collections.deque = collections.deque()
        max_in_flight = self.threads * 4
        group: list[str] = []
        group_tag: Tag | None = None
        chars = 0

        def submit():
            window.append((self._pool.submit(self._encode_chunk, group), group_tag))

        for tag, texts in batches:
            if group and tag is not group_tag:  # a task never mixes two tags
                submit()
                group, chars = [], 0
            group_tag = tag
            for text in texts:
                group.append(text)
                chars += len(text)
                if chars >= TASK_CHARS:
                    submit()
                    group, chars = [], 0
                    while len(window) >= max_in_flight:
                        future, done_tag = window.popleft()
                        yield (*future.result(), done_tag)
        if group:
            submit()
        while window:
            future, done_tag = window.popleft()
            yield (*future.result(), done_tag)
