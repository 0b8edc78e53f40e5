"""Named fault-injection points, off unless GPT2TRAIN_FAILPOINTS names them.

The fault tests (docs/reliability.md) need to kill a process at an exact place, e.g. between
two files of a checkpoint write, which no outside timer can hit reliably. The code marks such
places with `failpoint("checkpoint.model_written")`; the environment picks which fire:

    GPT2TRAIN_FAILPOINTS="checkpoint.model_written@2=kill,train.step_done@7=raise"

Each entry is `<name>[@<hit>]=<action>`: on the `hit`-th time this process passes the point
(default: the first), `kill` sends itself SIGKILL (no cleanup, as a power cut or the OOM
killer), `raise` raises `InjectedFault`, `enospc` raises OSError(ENOSPC) as a full disk would,
and `hold` waits there until the file GPT2TRAIN_FAILPOINTS_RELEASE names exists (for ever if
unset): a test that must act while a run is in a known state (kill it, cancel its job, let a
timeout pass) holds it there instead of hoping the machine is slow enough.
Unset (every real run), a failpoint costs one dict lookup. As etcd's gofail and TiKV's
fail-rs, the points stay in the shipped code, so the tested code is the code that runs.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from gpt2train.errors import Gpt2TrainError

ENV = "GPT2TRAIN_FAILPOINTS"
RELEASE_ENV = "GPT2TRAIN_FAILPOINTS_RELEASE"
ACTIONS = ("kill", "raise", "enospc", "hold")


class InjectedFault(Gpt2TrainError):
    """Raised by a failpoint whose action is `raise`."""


def _parse(spec: str) -> dict[str, tuple[int, str]]:
    points = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        where, sep, action = entry.partition("=")
        name, _, hit = where.partition("@")
        if not sep or action not in ACTIONS or (hit and not hit.isdigit()):
            raise ValueError(f"{ENV}: {entry!r} is not <name>[@<hit>]=<{'|'.join(ACTIONS)}>")
        points[name] = (int(hit or 1), action)
    return points


_points = _parse(os.environ.get(ENV, ""))
_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Fire the fault configured for `name` if this is its hit; otherwise nothing."""
    if name not in _points:
        return
    _hits[name] = _hits.get(name, 0) + 1
    hit, action = _points[name]
    if _hits[name] != hit:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "hold":
        release = os.environ.get(RELEASE_ENV)
        while not (release and Path(release).exists()):
            time.sleep(0.05)  # signals still arrive: SIGTERM's handler runs here
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (failpoint {name})")
    raise InjectedFault(f"injected fault at {name} (hit {hit}, {ENV})")

