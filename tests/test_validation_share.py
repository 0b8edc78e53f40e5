"""What the data stage tells about validation through `gpt2train pipeline`: the session chain's corpus
(2 files of 30 documents, shards of 40,000 tokens: tests/fixtures/chain.py) gives validation 40,000 of
its ~347,000 tokens, more than the 10% above which the library says so. The library's own tests of the
notice (both layouts, a whole file, told once) are in tests/test_prepare.py.
"""

from __future__ import annotations

import dagster as dg
import pytest

pytestmark = pytest.mark.e2e


def test_the_pipeline_tells_the_validation_share_once_and_shows_it_in_the_ui(materialized_chain, chain_instance):
    output = materialized_chain.output.stdout + materialized_chain.output.stderr
    told = [line for line in output.splitlines() if "validation takes" in line]
    assert len(told) == 1, told
    assert "of the corpus's tokens: 40,000 of " in told[0] and "in 2 source file(s)" in told[0]
    assert "lower shards.shard_size (now 40,000" in told[0] and "set shards.val_file" in told[0]

    # Each partition's metadata: the share when it finished; the last one's is the corpus's, in the notice's words.
    records = chain_instance.fetch_materializations(dg.AssetKey("token_shards"), limit=10).records
    metadata = [r.asset_materialization.metadata for r in records]
    assert len(metadata) == 2 and all("val_share" in m and "validation" in m for m in metadata)
    complete = [m for m in metadata if "so far" not in m["validation"].value]
    assert len(complete) == 1 and complete[0]["validation"].value == told[0].strip()
    total = int(told[0].split(" of ")[2].split(" in ")[0].replace(",", ""))
    assert complete[0]["val_share"].value == pytest.approx(40_000 / total, abs=1e-6)
