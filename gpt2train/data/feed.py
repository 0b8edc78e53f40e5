"""Source files into the tokenizer as one ordered stream of documents, each step running ahead of the next.

`gpt2train prepare` tokenizes every source file, in order, into one stream of shards. Done one step at a
time, a big machine idles: every file is hashed before the first token, each file's reader starts only
when the previous file is used up, and the tokenizer's window of in-flight work empties at every file
boundary. Here each of those runs ahead on threads of its own:

    with fetch_ahead(files, fetch, workers=4) as fetches:  # hash (or download) files on their own threads
        for record, texts in documents_of(fetches, open_batches, files_ahead=2):
            ...                                           # file i's documents while file i+1 is read

- `fetch_ahead` runs the fetches on a few threads, in corpus order; the consumer waits only for the file
  it needs next. A fetch that fails stops the run as soon as it is known (`FetchFailures.check`), naming
  the first bad file in corpus order, as a sequential fetch would.
- `documents_of` keeps the readers of the next `files_ahead` files running (each `depth` batches ahead on
  its own thread), so the tokenizer (gpt2train/data/tokenizer.py `encode_tagged`, one window across files)
  never waits for a file to open.

Memory stays bounded: at most `files_ahead` files are open, each holding `depth` batches read ahead.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Callable, Generic, Iterable, Iterator, Sequence, TypeVar

Item = TypeVar("Item")
Record = TypeVar("Record")


def done_future(value: Item) -> Future:
    """`value` as a Future that has already finished (a record fetched before the call)."""
    future: Future = Future()
    future.set_result(value)
    return future


class FetchFailures:
    """A check, cheap enough to make per batch, that no fetch has failed: raises the error of the first
    failed fetch in corpus order (after the fetches before it have finished, so that which error is raised
    does not depend on which thread was faster)."""

    def __init__(self, futures: Sequence[Future]):
        self.futures = futures
        self._failed = threading.Event()
        for f in futures:
            f.add_done_callback(lambda f: f.cancelled() or f.exception() is None or self._failed.set())

    def check(self) -> None:
        if not self._failed.is_set():
            return
        for f in self.futures:
            if f.cancelled():
                continue
            if f.exception() is not None:  # waits for a fetch still running before the failed one
                raise f.exception()


@contextlib.contextmanager
def fetch_ahead(items: Sequence[Item], fetch: Callable[[Item], Record], workers: int) -> Iterator[list[Future]]:
    """`fetch(item)` for every item (a source file), `workers` at a time, in order; yields their futures.

    On the way out, fetches not yet started are cancelled. One still running (only after an error or an
    interrupt) is left to end on its own thread, which does not keep the process alive: a hash ends by
    itself, and a download is resumable (gpt2train/data/hub.py); waiting for it would hold up Ctrl-C for as
    long as a 2 GB download takes."""
    futures = [Future() for _ in items]
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(len(items)):
        todo.put(i)

    def work() -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            if not futures[i].set_running_or_notify_cancel():  # cancelled: the run is over
                continue
            try:
                futures[i].set_result(fetch(items[i]))
            except BaseException as e:  # the consumer raises it (FetchFailures), in corpus order
                futures[i].set_exception(e)

    for n in range(max(1, min(workers, len(items)))):
        threading.Thread(target=work, name=f"fetch_{n}", daemon=True).start()
    try:
        yield futures
    finally:
        for f in futures:
            f.cancel()  # only those not started


def wait_all(futures: Sequence[Future]) -> list:
    """The results of `futures`, in order; the first failure in order is raised as soon as any is known."""
    failures = FetchFailures(futures)
    pending = set(futures)
    while pending:
        _, pending = wait(pending, return_when=FIRST_COMPLETED)
        failures.check()
    return [f.result() for f in futures]


class ReadAhead(Generic[Item]):
    """Iterate `batches` on its own thread, `depth` items ahead, so the reading (parquet decode, JSON
    parsing) overlaps with whatever the consumer does instead of alternating with it. The thread starts
    at once, not at the first `next`: a file is read ahead before its turn. An error on the reader's
    thread is raised in the consumer; `close()` stops the thread."""

    _DONE = object()

    def __init__(self, batches: Iterable[Item], depth: int = 2, name: str = "read-ahead"):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(batches,), name=name, daemon=True)
        self._thread.start()

    def _produce(self, batches: Iterable[Item]) -> None:
        try:
            for b in batches:
                if self._stop.is_set():
                    return
                self._q.put(b)
            self._q.put(self._DONE)
        except BaseException as e:  # re-raised in the consumer, with the file name in it
            self._q.put(e)

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        if self._finished:
            raise StopIteration
        item = self._q.get()
        if item is self._DONE or isinstance(item, BaseException):
            self._finished = True
            if item is self._DONE:
                raise StopIteration
            raise item
        return item

    def close(self) -> None:
        self._finished = True
        self._stop.set()
        while self._thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                self._q.get_nowait()
            except queue.Empty:
                self._thread.join(0.05)


class _OpenFile:
    """One source file's reader, started ahead of its turn. Its thread first waits for the file's fetch,
    so starting it never blocks the consumer, and closing it never waits for a fetch still running."""

    def __init__(self, fetched: Future, open_batches: Callable[[Record], Iterator[list[str]]], depth: int):
        self.fetched = fetched
        self.batches: Iterator[list[str]] | None = None
        self._closing = threading.Event()
        self.reader = ReadAhead(self._batches(open_batches), depth)

    def _batches(self, open_batches):
        while not self.fetched.done():  # a download can take minutes: look up now and then for close()
            if self._closing.wait(0.05):
                return
        self.batches = open_batches(self.fetched.result())
        yield from self.batches

    def close(self) -> None:
        # The reader's thread first (it may be inside the file's reader), then the file's reader itself,
        # so the source file's handle is released now rather than at garbage collection.
        self._closing.set()
        self.reader.close()
        if (close := getattr(self.batches, "close", None)) is not None:  # a generator's; a plain iterator has none
            close()


def documents_of(fetches: Sequence[Future], open_batches: Callable[[Record], Iterator[list[str]]],
                 files_ahead: int = 2, depth: int = 2) -> Iterator[tuple[Record, list[str]]]:
    """(record, a batch of its documents) for every file, in order, with the readers of the next
    `files_ahead` files running meanwhile. `open_batches(record)` reads one file (on its reader's thread);
    it can end with a check of the file (that it did not change while read): its error is raised here,
    after the file's last batch."""
    failures = FetchFailures(fetches)
    opened: list[_OpenFile] = []
    upcoming = iter(fetches)
    try:
        for _ in range(max(1, files_ahead)):
            if (fetched := next(upcoming, None)) is not None:
                opened.append(_OpenFile(fetched, open_batches, depth))
        while opened:
            current = opened[0]
            for texts in current.reader:
                failures.check()  # a later file that failed to fetch stops the run now, not at its turn
                yield current.fetched.result(), texts
            failures.check()
            current.close()
            opened.pop(0)
            if (fetched := next(upcoming, None)) is not None:
                opened.append(_OpenFile(fetched, open_batches, depth))
    finally:
        for f in opened:
            f.close()
