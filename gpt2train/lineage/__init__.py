"""Lineage: what every artifact records about how it was made, and the walk back to the corpus.

    records.py          the fields every sidecar shares, code versions, data-dir-relative paths
    stage_versions.py   each stage's version number (what its code version hashes)
    walk.py             `gpt2train lineage PATH`: the chain back to the corpus files, re-hashed
    nodes.py            what the walk finds: one node per artifact, its files and recorded sha256s
    format.py           the walk printed as a tree (compacted over many shards or corpus files)
"""
