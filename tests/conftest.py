"""The test suite's tiers, its environment and its shared fixtures.

Two tiers (docs/testing.md has the budget of each and how to find what broke it):

    pytest                              # unit tests: in-process, no server, no torchrun, no Dagster run
    pytest -m "e2e or not e2e" -n 2     # everything, end-to-end tests included, on 2 workers (CI)

A test marked `e2e` runs what a user runs: the CLI or torchrun as processes, Dagster runs, servers
(PostgreSQL, Slurm, the webserver, Chromium), or the lm-eval harness. Everything else is a unit test and
runs in plain `pytest` (the Hub's download tests among them: their local Hub is an in-process HTTP server).

Each expensive thing is built once per session by a fixture in tests/fixtures/ (its module says what it
costs and who uses it): the tiny shards, one trained tiny run, one checkpoint with its export and report,
the lm-eval task index, one 2-rank torchrun reference run, one materialized chain, one lineage chain,
one PostgreSQL and one Slurm cluster. Tests that change what a session fixture built work on a copy.
Under pytest-xdist (`-n 2`) the tests that share a costly fixture run on one worker (XDIST_GROUPS), so
it is still built once, and the longest of those groups are handed out first.
"""

from __future__ import annotations

import pytest

from tests.fixtures import environment
from tests.paths import EDU_MINI

pytest_plugins = [
    "tests.fixtures.data",
    "tests.fixtures.training",
    "tests.fixtures.evals",
    "tests.fixtures.chain",
    "tests.fixtures.hub",
    "tests.fixtures.servers",
]

# Before any test module is imported: huggingface_hub and transformers read their switches at import.
environment.apply()

# fixture -> xdist group: every test that uses the fixture runs on the same worker (--dist loadgroup),
# which builds it once. In order: a test using two of them joins the first one's group.
XDIST_GROUPS = {
    "slurm": "distributed",
    "two_rank_reference": "distributed",
    "materialized_chain": "chain",
    "postgres": "postgres",
    "tiny_report": "harness",
    "task_index": "harness",
    "tracked_run": "harness",  # test_trackers' module fixture: its two users on one worker, built once
}
# Handed out first (the longest first), so that no group starts last and runs alone.
GROUP_ORDER = ["distributed", "chain", "postgres", "harness"]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    def group_of(item) -> str | None:
        return next((group for f, group in XDIST_GROUPS.items() if f in item.fixturenames), None)

    for item in items:
        group = group_of(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))

    def rank(item) -> tuple[int, int]:
        group = group_of(item)
        if group:
            return 0, GROUP_ORDER.index(group)
        return (1, 0) if item.get_closest_marker("e2e") else (2, 0)

    items.sort(key=rank)  # stable: within a rank, files and tests keep their order


@pytest.fixture(scope="session", autouse=True)
def test_environment():
    """The tests' environment (tests/fixtures/environment.py), kept for the whole session."""
    mp = pytest.MonkeyPatch()
    for key, value in environment.test_env({}).items():
        mp.setenv(key, value)
    yield
    mp.undo()
    environment.cleanup()


@pytest.fixture(scope="session")
def edu_mini():
    if not EDU_MINI.is_dir():
        pytest.fail(f"{EDU_MINI} is missing: tests read the local corpus mirror from ../shared")
    return EDU_MINI


@pytest.fixture
def tiny_cfg(tmp_path, edu_mini):
    """The `tiny` preset pointed at edu-mini, writing into a fresh tmp data dir."""
    from gpt2train.config import load_config

    return load_config("tiny", overrides=[f"data_dir={tmp_path / 'data'}", f"corpus.source={edu_mini}"])


@pytest.fixture
def instance(tmp_path):
    """A SQLite Dagster instance in a temp DAGSTER_HOME."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as inst:
        yield inst
