"""Dagster assets: thin wrappers over the library, one module per pipeline stage.

Each asset reads its config section, calls one `gpt2train` function, and attaches the
lineage the library returns as metadata; errors propagate so failed runs show the cause.
"""
