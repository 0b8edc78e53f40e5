"""`gpt2train lineage`: walking a real chain on disk back to the corpus file, and catching changes.

The chain is the session's lineage chain (tests/fixtures/data.py): the corpus record and token shards
written by the library itself (the data stage over a copy of one edu-mini file), a checkpoint saved
with the training lineage records, and small but well-formed export and report directories following
docs/lineage.md, with real hashes of the files written into them. A test that damages it works on a
copy (`copy_lineage_chain`), which names its own files (every path recorded relative to the data dir).

    pytest tests/test_lineage_walk.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import save_file

from gpt2train.config import load_config
from gpt2train.data.stage import materialize_corpus_file, materialize_token_shards
from gpt2train.errors import Gpt2TrainError
from gpt2train.fileio import sha256_file
from gpt2train.layout import checkpoint_key
from gpt2train.lineage.format import format_lineage
from gpt2train.lineage.walk import walk_lineage
from gpt2train.training.checkpoint import DONE
from tests.commands import gpt2train
from tests.fixtures.data import LINEAGE_KEY as KEY


def by_kind(nodes, kind):
    return [n for n in nodes if n.kind == kind]


def flip_byte(path: Path, offset: int = 300) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_walk_from_report_reaches_every_level_down_to_the_corpus_file(lineage_chain):
    chain = lineage_chain
    nodes = walk_lineage(chain.report, progress=False)
    levels = [(n.depth, n.kind) for n in nodes]
    assert levels[:3] == [(0, "eval_report"), (1, "hf_export"), (2, "checkpoint")]
    assert [n.path for n in by_kind(nodes, "token_shard")] == chain.shards  # every shard, once
    assert {n.depth for n in by_kind(nodes, "token_shard")} == {3}
    # 49 shards share one source file: one record, one corpus file.
    assert [(n.depth, n.path) for n in by_kind(nodes, "corpus_record")] == [(4, chain.record)]
    assert [(n.depth, n.path) for n in by_kind(nodes, "corpus_file")] == [(5, chain.corpus_file)]
    assert all(n.status == "ok" for n in nodes), [(n.path, n.status) for n in nodes if n.status != "ok"]
    # Re-hashed for real: the corpus file's and the checkpoint's hashes are the files' hashes now.
    assert by_kind(nodes, "corpus_file")[0].actual_hash == sha256_file(chain.corpus_file)
    ck = by_kind(nodes, "checkpoint")[0]
    assert ck.actual_hash == ck.recorded_hash == sha256_file(chain.checkpoint / "model.safetensors")
    assert ck.details["summary"]["descriptor"] == "tiny" and ck.details["code_version"]

    text = format_lineage(nodes)
    lines = text.splitlines()
    assert len(lines) < 25  # 54 artifacts stay readable: the shards are one summary line
    assert f"token_shard x{len(chain.shards)}" in text and f"{len(chain.shards)} ok" in text
    assert str(chain.corpus_file) in text and "hellaswag acc 0.25" in text
    assert lines[-1] == f"{len(nodes)} artifacts, {len(nodes)} verified, 0 mismatched, 0 missing"


def test_a_flipped_shard_byte_is_a_mismatch(copy_lineage_chain):
    chain = copy_lineage_chain
    bad = chain.shards[5]
    flip_byte(bad)
    nodes = walk_lineage(chain.report, progress=False)
    assert [n.path for n in nodes if not n.ok] == [bad]
    node = next(n for n in nodes if n.path == bad)
    assert node.status == "MISMATCH" and node.actual_hash == sha256_file(bad) != node.recorded_hash
    # Both places that recorded the shard's hash disagree with it now.
    why = "\n".join(c.why for c in node.checks)
    assert "shard sidecar" in why and "checkpoint state.json" in why
    # The walk goes on past it to the corpus.
    assert by_kind(nodes, "corpus_file")[0].status == "ok"


@pytest.mark.e2e
def test_the_cli_exits_2_naming_a_flipped_shard_byte(copy_lineage_chain):
    chain = copy_lineage_chain
    bad = chain.shards[5]
    flip_byte(bad)
    r = gpt2train("lineage", chain.report)
    assert r.returncode == 2, r.stdout + r.stderr
    assert str(bad) in r.stdout and "MISMATCH" in r.stdout
    assert f"{len(chain.shards) - 1} ok, 1 MISMATCH" in r.stdout
    assert str(chain.shards[4]) not in r.stdout  # ok shards are counted, not listed
    assert "mismatched" in r.stdout.splitlines()[-1] and "1 mismatched" in r.stdout.splitlines()[-1]
    assert "no longer match" in r.stderr


def test_deleted_export_weights_are_missing_and_the_walk_continues(copy_lineage_chain):
    chain = copy_lineage_chain
    (chain.export / "model.safetensors").unlink()
    nodes = walk_lineage(chain.report, progress=False)
    export = by_kind(nodes, "hf_export")[0]
    assert export.status == "MISSING" and not export.ok
    assert [n.kind for n in nodes if not n.ok] == ["hf_export"]
    assert by_kind(nodes, "corpus_file")[0].status == "ok"
    assert "model.safetensors is gone" in format_lineage(nodes)


def test_deleted_export_directory_is_bridged_by_the_reports_copy_of_the_checkpoint(copy_lineage_chain):
    chain = copy_lineage_chain
    shutil.rmtree(chain.export)
    nodes = walk_lineage(chain.report, progress=False)
    assert by_kind(nodes, "hf_export")[0].status == "MISSING"
    assert by_kind(nodes, "checkpoint")[0].status == "ok"
    assert len(by_kind(nodes, "token_shard")) == len(chain.shards)


def test_changed_checkpoint_weights_mismatch_every_record_of_them(copy_lineage_chain):
    chain = copy_lineage_chain
    save_file({"x": __import__("torch").zeros(3)}, chain.checkpoint / "model.safetensors")
    nodes = walk_lineage(chain.export, progress=False)
    assert [n.kind for n in nodes if not n.ok] == ["checkpoint"]
    why = by_kind(nodes, "checkpoint")[0].checks[0].why
    assert "checkpoint state.json" in why and "export lineage.json" in why


def test_walk_from_a_shard_or_its_sidecar(lineage_chain):
    chain = lineage_chain
    shard = chain.shards[3]
    for start in (shard, shard.with_name(shard.name + ".json")):
        nodes = walk_lineage(start, progress=False)
        assert [(n.depth, n.kind, n.path) for n in nodes] == [
            (0, "token_shard", shard), (1, "corpus_record", chain.record), (2, "corpus_file", chain.corpus_file)]
        assert all(n.status == "ok" for n in nodes)
    text = format_lineage(nodes)
    assert str(shard) in text and "3 artifacts, 3 verified" in text


def test_a_changed_corpus_file_mismatches_even_after_its_record_is_rewritten(copy_lineage_chain):
    chain = copy_lineage_chain
    flip_byte(chain.corpus_file, 5000)
    nodes = walk_lineage(chain.record, progress=False)
    assert [(n.kind, n.status) for n in nodes] == [("corpus_record", "ok"), ("corpus_file", "MISMATCH")]
    # Re-recording the new bytes does not hide that the shards were made from the old ones.
    record = json.loads(chain.record.read_text())
    record["sha256"] = sha256_file(chain.corpus_file)
    chain.record.write_text(json.dumps(record))
    nodes = walk_lineage(chain.shards[0], progress=False)
    corpus = by_kind(nodes, "corpus_file")[0]
    assert corpus.status == "MISMATCH" and "shard sidecar" in corpus.checks[0].why
    assert "corpus record" not in corpus.checks[0].why  # the record agrees with the file now


def test_no_rehash_reads_unverified_but_still_sees_missing_and_resized_files(copy_lineage_chain):
    chain = copy_lineage_chain
    nodes = walk_lineage(chain.report, rehash=False, progress=False)
    content = [n for n in nodes if n.kind != "corpus_record"]  # a record has no hash, only has to exist
    assert {n.status for n in content} == {"unverified"}
    assert all(n.actual_hash is None and n.recorded_hash for n in content)
    assert format_lineage(nodes).splitlines()[-1].endswith(f"{len(content)} unverified (not re-hashed)")

    # A stat is free: a truncated corpus file and a deleted shard show without hashing.
    with open(chain.corpus_file, "r+b") as f:
        f.truncate(1000)
    chain.shards[7].unlink()
    nodes = walk_lineage(chain.report, rehash=False, progress=False)
    assert {(n.kind, n.status) for n in nodes if not n.ok} == {("corpus_file", "MISMATCH"),
                                                               ("token_shard", "MISSING")}


def test_paths_that_are_not_artifacts_get_a_clear_error(copy_lineage_chain, tmp_path):
    chain = copy_lineage_chain
    stray = tmp_path / "notes.txt"
    stray.write_text("hello")
    for bad in (stray, tmp_path / "nope", chain.checkpoint.parent, chain.corpus_file):
        with pytest.raises(Gpt2TrainError, match="takes an eval report directory"):
            walk_lineage(bad, progress=False)
    (chain.checkpoint / DONE).unlink()
    with pytest.raises(Gpt2TrainError, match="incomplete"):
        walk_lineage(chain.checkpoint, progress=False)
    # Reached from the export instead, the incomplete checkpoint is a node that is not ok.
    nodes = walk_lineage(chain.export, progress=False)
    assert by_kind(nodes, "checkpoint")[0].status == "MISSING"
    orphan = tmp_path / "orphan.bin"
    orphan.write_bytes(b"\0" * 1024)
    with pytest.raises(Gpt2TrainError, match="no sidecar"):
        walk_lineage(orphan, progress=False)


def test_many_corpus_files_print_compactly_listing_only_the_bad_ones(tmp_path):
    # Formatting alone (edu-mini has 3 files; FineWeb-Edu's sample-100BT has ~100).
    from gpt2train.lineage.nodes import LineageNode

    nodes = [LineageNode("corpus_record", tmp_path / f"r{i}.json", 0, status="ok",
                         details={"code_version": "c0ffee", "summary": {"documents": "10"}}) for i in range(12)]
    nodes[7].status = "MISSING"
    text = format_lineage(nodes)
    assert "corpus_record x12" in text and "11 ok, 1 MISSING" in text and "120 documents" in text
    assert str(tmp_path / "r7.json") in text and str(tmp_path / "r6.json") not in text
    assert text.splitlines()[-1] == "12 artifacts, 11 verified, 0 mismatched, 1 missing"


@pytest.mark.e2e
def test_a_copied_data_dir_verifies_the_copy_and_records_no_temporary_path(tmp_path, edu_mini, task_index):
    """The real writers (data stage, trainer, export, lm-eval report) record paths inside the data dir
    relative to it: a copy of the data dir walks its own files, so a byte flipped in the copy is found
    there; and a source mirror left behind is named, with where it was."""
    from evals.runner import evaluate_export
    from gpt2train.config import EvalsConfig
    from gpt2train.export.hf_export import export_checkpoint
    from gpt2train.training.loop import train
    from tests.paths import HELLASWAG

    src = tmp_path / "mirror"
    (src / "sample" / "10BT").mkdir(parents=True)
    shutil.copyfile(edu_mini / KEY, src / KEY)
    data = tmp_path / "data"
    cfg = load_config("tiny", [f"data_dir={data}", f"corpus.source={src}", "corpus.files=1",
                               "corpus.max_documents_per_file=30", "shards.shard_size=20000", "train.max_steps=2",
                               "train.checkpoint_every=2", "train.val_every=2", "train.val_batches=1",
                               "train.hellaswag_every=0", "train.sample_every=0"])
    materialize_corpus_file(cfg, KEY)
    materialize_token_shards(cfg, KEY, progress=False)
    ckpt = Path(train(cfg).out_dir) / "checkpoints" / "step_00000002"
    export = export_checkpoint(ckpt, data / "exports" / checkpoint_key(ckpt)).out_dir
    report = evaluate_export(export, data / "reports" / checkpoint_key(ckpt),
                             EvalsConfig(limit=2, local_data=[f"hellaswag={HELLASWAG}"], batch_size=2, device="cpu"),
                             model_label="copy test").report_dir
    sidecars = [p for p in data.rglob("*.json") if p.name in ("lineage.json", "state.json") or
                p.parent.name in ("records", "partitions") or p.name.endswith(".bin.json")]
    assert not [p for p in sidecars if ".tmp-" in p.read_text()], "a sidecar names a temporary path"
    # Lineage paths are relative; a sidecar's `config` is the config as it was resolved on that machine.
    lineage_text = [json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "config"})
                    for p in sidecars]
    assert not [t for t in lineage_text if str(data) in t], "a sidecar names a path in the data dir absolutely"

    copy = tmp_path / "elsewhere" / "data-copy"
    shutil.copytree(data, copy)
    nodes = walk_lineage(copy / "reports" / checkpoint_key(ckpt), progress=False)
    assert all(n.ok for n in nodes), [(n.kind, n.path, n.status) for n in nodes if not n.ok]
    assert all(str(n.path).startswith(str(copy)) for n in nodes if n.kind != "corpus_file")
    val = next(copy.glob("shards/*_val_*.bin"))
    flip_byte(val)
    nodes = walk_lineage(copy / "reports" / checkpoint_key(ckpt), progress=False)
    bad = [(n.kind, n.path) for n in nodes if n.status == "MISMATCH"]
    assert bad == [("token_shard", val)]
    assert all(n.ok for n in walk_lineage(report, progress=False))  # the original is untouched

    shutil.rmtree(src)  # the copy travelled without the corpus.source mirror
    nodes = walk_lineage(copy / "reports" / checkpoint_key(ckpt), progress=False)
    (source,) = by_kind(nodes, "corpus_file")
    assert source.status == "MISSING"
    assert f"the source file {KEY!r} is missing: it was recorded at {src / KEY}" in " ".join(source.notes)
    assert f"it was recorded at {src / KEY}" in format_lineage(nodes)
