"""Where the test suite's time goes, from pytest's JUnit XML: the total, the slowest tests and the
seconds per file, as markdown tables (docs/testing.md is made of them).

    pytest -m "e2e or not e2e" -n 2 --junitxml=after.xml
    python bench/test_times.py after.xml                     # one run
    python bench/test_times.py before.xml after.xml          # side by side: each run's slowest, the other's beside
    python bench/test_times.py after.xml --slowest 30

A test's seconds are JUnit's `time`: setup + call + teardown, so a module or session fixture's cost
lands on the first test that asks for it (which is what moved when a fixture moves).
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def read_junit(path: Path) -> tuple[float, dict[str, float], dict[str, str]]:
    """(wall seconds of the session, {test id: seconds}, {test id: outcome})."""
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    times, outcomes = {}, {}
    for case in suite.iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        name = case.get("name", "")
        if name.rfind("@") > name.rfind("]"):  # pytest-xdist's --dist loadgroup suffix: `test_x@group`
            name = name.rsplit("@", 1)[0]
        test_id = f"{module}.py::{name}"
        times[test_id] = float(case.get("time", 0.0))
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            if case.find(kind) is not None:
                outcome = kind
        outcomes[test_id] = outcome
    return float(suite.get("time", 0.0)), times, outcomes


def per_file(times: dict[str, float]) -> dict[str, float]:
    files: dict[str, float] = defaultdict(float)
    for test_id, seconds in times.items():
        files[test_id.split("::")[0]] += seconds
    return dict(files)


def _counts(outcomes: dict[str, str]) -> str:
    n = defaultdict(int)
    for o in outcomes.values():
        n[o] += 1
    return ", ".join(f"{v} {k}" for k, v in sorted(n.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("xml", nargs="+", type=Path, help="one JUnit XML, or two: before and after")
    ap.add_argument("--slowest", type=int, default=30, help="how many of the slowest tests to list (of the last run)")
    args = ap.parse_args()
    runs = [read_junit(p) for p in args.xml]
    names = ["before", "after"] if len(runs) == 2 else ["seconds"]

    print("| run | wall (s) | tests | sum of test times (s) |\n|---|---:|---|---:|")
    for name, (wall, times, outcomes) in zip(names, runs):
        print(f"| {name} | {wall:.0f} | {_counts(outcomes)} | {sum(times.values()):.0f} |")

    header = " | ".join(names)
    for name, (_, times, _) in zip(names, runs):  # each run's slowest, with the other run's seconds beside
        print(f"\n**The {args.slowest} slowest tests** ({name})\n")
        print(f"| test | {header} |\n|---|{'---:|' * len(runs)}")
        for test_id, _ in sorted(times.items(), key=lambda kv: -kv[1])[:args.slowest]:
            cells = " | ".join(f"{r[1][test_id]:.1f}" if test_id in r[1] else "–" for r in runs)
            print(f"| `{test_id}` | {cells} |")

    files = [per_file(r[1]) for r in runs]
    print(f"\n**Seconds per file**\n\n| file | {header} |\n|---|{'---:|' * len(runs)}")
    every = sorted(set().union(*files), key=lambda f: -max(x.get(f, 0.0) for x in files))
    for name in every:
        cells = " | ".join(f"{x[name]:.1f}" if name in x else "–" for x in files)
        print(f"| `{name}` | {cells} |")


if __name__ == "__main__":
    main()
