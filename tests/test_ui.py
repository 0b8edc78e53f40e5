"""The real Dagster UI over a materialized chain: GraphQL says every asset is there and fresh,
and headless Chromium shows all seven on the global lineage page; after an `evals.limit` change, the
asset graph shows eval_report's stale partitions (its `stale_partitions` check, pipelines/stale_checks.py).

    pytest -m e2e tests/test_ui.py -q        # needs /usr/bin/chromium and `pip install playwright`

The chain is the session's (tests/fixtures/chain.py: `gpt2train pipeline`, a persistent SQLite
DAGSTER_HOME); `chain_ui` serves a copy of it with `dagster dev -w workspace.yaml` (tests/webserver.py)
and the chain's config through GPT2TRAIN_SET: the same code versions, so nothing may show as stale.
`stale_ui` serves another copy with `evals.limit=5`: eval_report's code version moves, its partitions
go stale, and stale_partitions_sensor (ticking in `dagster dev`'s daemon) records the check that carries
them to the asset graph. The screenshots are also copied to bench/out/ to look at.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.chain import CHAIN_SETS, Chain
from tests.paths import REPO

pytestmark = pytest.mark.e2e

ASSETS = ("corpus", "token_shards", "shard_manifest", "training_run", "checkpoint", "hf_export", "eval_report",
          "report_manifest", "eval_summary")
EXTERNAL = ("shard_manifest", "checkpoint", "report_manifest")  # recorded by gpt2train, never computed by Dagster
PARTITIONS = {"corpus_files": 2, "checkpoints": 2}  # corpus.files=2; max_steps=4 / checkpoint_every=2
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_COPY = REPO / "bench" / "out" / "asset_graph.png"
# No network here; a few of Chromium's own background fetches would otherwise wait on it.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


ASSET_NODES = "{ assetNodes { assetKey { path } groupName isPartitioned isMaterializable isObservable } }"

ASSET_DETAIL = """query Detail($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
  __typename ... on AssetNode {
    partitionDefinition { name }
    partitionKeys
    staleStatus
    staleCauses { key { path } partitionKey reason dependency { path } }
    assetMaterializations(limit: 1) { timestamp }
  } } }"""

PARTITIONED_DETAIL = """query Parts($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
  ... on AssetNode {
    partitionKeys
    staleStatusByPartition
    staleCausesByPartition { key { path } partitionKey reason dependency { path } }
    partitionStats { numMaterialized numPartitions numFailed }
    latestMaterializationByPartition { partition }
  } } }"""

RUNS = "{ runsOrError { __typename ... on Runs { results { runId status jobName } } } }"

STALE_CHECK = """query Check($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  assetChecksOrError { __typename ... on AssetChecks { checks { name
    executionForLatestMaterialization { status evaluation { severity description
      metadataEntries { label ... on MarkdownMetadataEntry { mdStr } } } } } } } } } }"""


def test_every_asset_is_materialized_and_fresh_in_the_ui(chain_ui):
    server, chain = chain_ui
    nodes = {"/".join(n["assetKey"]["path"]): n for n in server.graphql(ASSET_NODES)["assetNodes"]}
    assert set(ASSETS) <= set(nodes), f"the UI lists {sorted(nodes)}"
    # The UI reads the very runs the chain wrote (same DAGSTER_HOME), all successful.
    with chain.open_instance() as instance:
        written = [r.run_id for r in instance.get_runs()]
    runs = {r["runId"]: r for r in server.graphql(RUNS)["runsOrError"]["results"]}
    assert len(written) == 6 and set(written) <= set(runs)
    assert {runs[r]["status"] for r in written} == {"SUCCESS"}

    for name in ASSETS:
        node = nodes[name]
        detail = server.graphql(ASSET_DETAIL, {"key": {"path": [name]}})["assetNodeOrError"]
        assert detail["__typename"] == "AssetNode", (name, detail)
        # The external assets are recorded (runless materializations with their content hash), never computed.
        assert node["isMaterializable"] == (name not in EXTERNAL), node
        if not node["isPartitioned"]:
            assert detail["assetMaterializations"], f"{name}: never materialized, says the UI"
            if name not in EXTERNAL:  # Dagster gives an external asset no stale status to check
                assert detail["staleStatus"] == "FRESH", \
                    f"{name}: {detail['staleStatus']} in the UI, because {detail['staleCauses']}"
            continue
        keys = detail["partitionKeys"]
        assert len(keys) == PARTITIONS[detail["partitionDefinition"]["name"]], (name, keys)
        parts = server.graphql(PARTITIONED_DETAIL, {"key": {"path": [name]}})["assetNodeOrError"]
        stats = parts["partitionStats"]
        assert stats["numMaterialized"] == stats["numPartitions"] == len(keys) and stats["numFailed"] == 0, \
            (name, stats)
        assert sorted(m["partition"] for m in parts["latestMaterializationByPartition"] if m) == sorted(keys)
        if name not in EXTERNAL:
            assert dict(zip(parts["partitionKeys"], parts["staleStatusByPartition"])) == \
                dict.fromkeys(keys, "FRESH"), (name, parts["staleStatusByPartition"], parts["staleCausesByPartition"])


def stale_partitions_check(server, asset: str) -> dict | None:
    """The latest `stale_partitions` result the UI shows for `asset` (None before the sensor's tick)."""
    node = server.graphql(STALE_CHECK, {"key": {"path": [asset]}})["assetNodeOrError"]
    checks = {c["name"]: c for c in node["assetChecksOrError"]["checks"]}
    return checks["stale_partitions"]["executionForLatestMaterialization"]


def wait_for_check(server, asset: str, status: str, timeout: float = 180) -> dict:
    """`asset`'s stale_partitions result once it has `status` (SUCCEEDED, FAILED): the chain's pipeline
    recorded one, stale_partitions_sensor records another when it differs (the daemon ticks it every 30 s)."""
    deadline = time.monotonic() + timeout
    while (execution := stale_partitions_check(server, asset)) is None or execution["status"] != status:
        if time.monotonic() > deadline:
            pytest.fail(f"{asset}'s stale_partitions is {execution} after {timeout:.0f} s, not {status}:\n"
                        f"{server.log_tail()}")
        time.sleep(2)
    return execution


@pytest.fixture(scope="module")
def stale_ui(materialized_chain, tmp_path_factory):
    """(the webserver, the chain it serves): the session's chain served with `evals.limit=5`, a new
    eval_report code version; nothing rerun."""
    from tests.webserver import dagster_dev

    root = tmp_path_factory.mktemp("stale_ui") / "chain"
    shutil.copytree(materialized_chain.root, root, symlinks=True)
    chain = Chain(root, None)
    env = {**os.environ, "DAGSTER_HOME": str(chain.home), "GPT2TRAIN_CONFIG": "tiny",
           "GPT2TRAIN_SET": ";".join([f"data_dir={chain.data}", *CHAIN_SETS, "evals.limit=5"])}
    with dagster_dev(REPO, env, root.parent / "dagster_dev.log") as server:
        yield server, chain


def test_every_partitioned_asset_has_a_passing_stale_partitions_check(chain_ui):
    server, chain = chain_ui
    for asset in ("corpus", "token_shards", "hf_export", "eval_report"):
        execution = wait_for_check(server, asset, "SUCCEEDED")
        assert execution["evaluation"]["description"] == "all 2 materialized partitions are fresh", execution


def launch_chromium(playwright):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's Chromium (`apt-get install -y chromium`, "
                    "as .ci/run does); this test drives the real UI in it")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def skip_community_dialog(page) -> None:
    """A fresh browser is asked to join the community first; Skip closes that."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=10_000)
        skip.click()
        skip.wait_for(state="hidden")
    except PlaywrightTimeout:
        pass  # no such dialog (anymore): nothing in the way


def test_lineage_page_shows_every_asset(chain_ui, tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("drives Debian's /usr/bin/chromium: Linux only")
    try:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Python Playwright is missing: `pip install -e '.[dev]'` (it drives /usr/bin/chromium; "
                    "never `playwright install`)")
    server, _ = chain_ui
    shot = tmp_path / "asset_graph.png"
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            # Twice the pixels: the fitted graph's labels stay legible in the screenshot.
            page = browser.new_page(viewport={"width": 1600, "height": 900}, device_scale_factor=2)
            page.set_default_timeout(60_000)
            # The global asset graph: every group's assets and the edges between them.
            page.goto(f"{server.url}/asset-groups", wait_until="domcontentloaded")
            graph = page.locator("svg foreignObject")  # one per drawn group and asset node
            try:
                graph.first.wait_for(state="visible", timeout=60_000)
            except PlaywrightTimeout:
                page.screenshot(path=str(shot), full_page=True)
                raise
            skip_community_dialog(page)
            # Groups start collapsed, one box each; Alt+E is the graph's "expand all groups" (a toggle,
            # so only when no asset node is drawn yet).
            if not graph.get_by_text(ASSETS[-1], exact=True).count():
                page.keyboard.press("Alt+KeyE")
            for name in ASSETS:
                graph.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=30_000)
            # The nodes' live data (status, staleness) arrives in queries of its own: let them land.
            try:
                page.wait_for_load_state("networkidle", timeout=20_000)
            except PlaywrightTimeout:
                pass  # polling never quite idles: the nodes are drawn, check what is there
            page.screenshot(path=str(shot), full_page=True)
            # The UI's own stale markers (a dot on a zoomed-out node, "Unsynced" on a full one): none.
            stale = graph.locator("[class*='minimalNodeStaleDot']").count() + graph.get_by_text("Unsynced").count()
            assert not stale, f"the lineage page marks {stale} asset(s) stale; see {SCREENSHOT_COPY}"
        finally:
            browser.close()
            if shot.exists():
                SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
                tmp = SCREENSHOT_COPY.with_name(f".{SCREENSHOT_COPY.name}.tmp")
                shutil.copyfile(shot, tmp)
                os.replace(tmp, SCREENSHOT_COPY)
    assert shot.stat().st_size > 10_000


def test_the_asset_graph_shows_eval_reports_stale_partitions_after_an_evals_limit_change(stale_ui, tmp_path):
    """Nothing reran: `evals.limit` moved eval_report's code version, and within a sensor tick the
    asset graph marks eval_report's checks with a warning while hf_export's pass; its checks page names
    both stale partitions and the cause."""
    if not sys.platform.startswith("linux"):
        pytest.skip("drives Debian's /usr/bin/chromium: Linux only")
    from playwright.sync_api import sync_playwright

    server, chain = stale_ui
    with chain.open_instance() as instance:
        keys = sorted(instance.get_dynamic_partitions("checkpoints"))
    failed = wait_for_check(server, "eval_report", "FAILED")
    assert failed["evaluation"]["severity"] == "WARN"
    assert failed["evaluation"]["description"] == f"2 of 2 partitions are stale: {keys[0]}, {keys[1]} " \
                                                  "(has a new code version)", failed
    table = {e["label"]: e.get("mdStr") for e in failed["evaluation"]["metadataEntries"]}["stale_partitions"]
    assert all(f"| `{k}` | has a new code version |" in table for k in keys), table
    for asset in ("corpus", "token_shards", "hf_export"):  # upstream of the change: fresh, and shown so
        assert wait_for_check(server, asset, "SUCCEEDED")["evaluation"]["description"] == \
            "all 2 materialized partitions are fresh"
    assert len(server.graphql(RUNS)["runsOrError"]["results"]) == 6  # the chain's runs: the sensor ran none

    shot = tmp_path / "stale_partitions.png"
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900}, device_scale_factor=2)
            page.set_default_timeout(60_000)
            # The evaluation group's graph: its nodes drawn in full, each with its "Asset checks" row.
            page.goto(f"{server.url}/locations/gpt2train/asset-groups/evaluation", wait_until="domcontentloaded")
            skip_community_dialog(page)
            checks = {a: page.locator(f"svg foreignObject a[href='/assets/{a}?view=checks']")
                      for a in ("hf_export", "eval_report")}
            warning = checks["eval_report"].locator("[aria-label='warning_outline']")
            try:
                warning.wait_for(state="visible", timeout=60_000)
            finally:
                page.screenshot(path=str(shot), full_page=True)
            assert checks["hf_export"].get_by_text("1 / 1 Passed").is_visible()
            assert not checks["hf_export"].locator("[aria-label='warning_outline']").count()
            # Its checks page: the result, naming the stale partitions and why.
            checks["eval_report"].click()
            page.get_by_text("stale_partitions", exact=True).first.wait_for(state="visible")
            page.get_by_text(failed["evaluation"]["description"], exact=True).wait_for(state="visible")
            page.screenshot(path=str(tmp_path / "stale_partitions_checks.png"), full_page=True)
        finally:
            browser.close()
            for name in ("stale_partitions.png", "stale_partitions_checks.png"):
                if (tmp_path / name).exists():
                    copy = SCREENSHOT_COPY.with_name(name)
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(tmp_path / name, copy)
