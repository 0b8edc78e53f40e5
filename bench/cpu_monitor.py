"""Where a process's CPU time goes, thread by thread, and how much of the time every core was busy.

    monitor = CpuMonitor(interval=0.05, mark="tokenize").start()
    ...                                    # the work, on any number of threads
    profile = monitor.stop()               # CpuProfile: wall, cpu, busy share, CPU seconds per thread name,
                                           # and the same at the mark: when a `tokenize*` thread first ran

Linux only: it samples /proc/self/stat (the process) and /proc/self/task/<tid>/schedstat (each thread) every
`interval` seconds, and names each thread by its Python name (`threading.Thread.native_id`). A thread's CPU
is its last sample, so a thread that lives shorter than `interval` may be missed (tokenizer, reader and
fetch threads live for a whole file or run). The sampler's own CPU is left out of every figure.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(stat_path: str) -> float:
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime (fields 14, 15 of stat)


def _thread_cpu_seconds(tid: int) -> float:
    # schedstat's first field is the thread's time on a CPU in nanoseconds: stat's utime and stime are whole
    # clock ticks (10 ms) per thread, which rounds a reader thread that lives for one small file down to 0.
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def by_role(threads: dict[str, float], roles: dict[str, str]) -> dict[str, float]:
    """CPU seconds summed over the threads whose name starts with each prefix of `roles` ({prefix: role});
    the rest under "other"."""
    out = {role: 0.0 for role in roles.values()}
    out["other"] = 0.0
    for name, cpu in threads.items():
        out[next((r for prefix, r in roles.items() if name.startswith(prefix)), "other")] += cpu
    return out


@dataclass
class CpuProfile:
    """What `CpuMonitor.stop` found."""

    wall: float                     # seconds from start() to stop()
    cpu: float                      # CPU seconds of the process (all threads but the monitor's) meanwhile
    busy_share: float               # share of the wall time with every core busy (>= 90% of `cores`)
    cores: int
    threads: dict[str, float] = field(default_factory=dict)   # CPU seconds by thread name
    first_cpu_at: dict[str, float] = field(default_factory=dict)  # seconds after start() a name first used CPU
    at_mark: dict = field(default_factory=dict)  # {"wall", "cpu", "threads"} when a `mark` thread first ran

    def to_dict(self) -> dict:
        return {"wall": self.wall, "cpu": self.cpu, "busy_share": self.busy_share, "cores": self.cores,
                "threads": self.threads, "first_cpu_at": self.first_cpu_at, "at_mark": self.at_mark}


class CpuMonitor:
    def __init__(self, interval: float = 0.05, mark: str | None = None):
        self.interval, self.mark = interval, mark
        self._at_mark: dict = {}
        self.cores = len(os.sched_getaffinity(0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-monitor", daemon=True)
        self._by_tid: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._first: dict[str, float] = {}
        self._busy = 0.0

    def start(self) -> CpuMonitor:
        self._t0 = time.perf_counter()
        self._cpu0 = _cpu_seconds("/proc/self/stat")
        self._base = self._sample_threads()  # CPU the threads had already used: not this run's
        self._thread.start()
        return self

    def _sample_threads(self) -> dict[int, float]:
        out = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                out[int(tid)] = _thread_cpu_seconds(int(tid))
            except (OSError, IndexError):  # the thread ended meanwhile
                pass
        return out

    def _sample(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        for tid, cpu in self._sample_threads().items():
            used = cpu - self._base.get(tid, 0.0)
            self._by_tid[tid] = used
            name = names.get(tid) or self._names.get(tid) or f"tid-{tid}"
            self._names[tid] = name
            if used > 0 and name not in self._first:
                self._first[name] = time.perf_counter() - self._t0
        if self.mark and not self._at_mark and any(n.startswith(self.mark) for n in self._first):
            self._at_mark = {"wall": time.perf_counter() - self._t0,
                             "cpu": _cpu_seconds("/proc/self/stat") - self._cpu0 - time.thread_time(),
                             "threads": self._threads_by_name()}

    def _threads_by_name(self) -> dict[str, float]:
        # Pool threads are named `<prefix>_<n>`: one entry per thread, summed by prefix in by_role.
        threads: dict[str, float] = {}
        for tid, cpu in self._by_tid.items():
            if tid != self._thread.native_id:
                threads[self._names[tid]] = threads.get(self._names[tid], 0.0) + cpu
        return threads

    def _run(self) -> None:
        # The process's CPU less this thread's own (time.thread_time: the monitor is not the work).
        last_t, last_cpu = time.perf_counter(), _cpu_seconds("/proc/self/stat") - time.thread_time()
        while not self._stop.wait(self.interval):
            now, cpu = time.perf_counter(), _cpu_seconds("/proc/self/stat") - time.thread_time()
            if (cpu - last_cpu) >= 0.9 * self.cores * (now - last_t):
                self._busy += now - last_t
            last_t, last_cpu = now, cpu
            self._sample()
        self._sample()

    def stop(self) -> CpuProfile:
        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self._t0
        own = self._by_tid.get(self._thread.native_id, 0.0)
        return CpuProfile(wall, _cpu_seconds("/proc/self/stat") - self._cpu0 - own, self._busy / wall, self.cores,
                          self._threads_by_name(), self._first, self._at_mark)
