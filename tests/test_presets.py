"""The gpt2_* presets are llm.c's runs: each body equals, setting by setting, the llm.c launch line its
header quotes (llm.c's defaults for every flag the line leaves out), with what the pipeline needs to
show the run: checkpoints (a trend of exports and reports), in-loop HellaSwag, ZeRO-1, 8 processes,
and published figures for its size in every report."""

from __future__ import annotations

import http.server
import shutil
import threading
from pathlib import Path

import pytest

from evals.published import published_baselines
from evals.report import model_size
from gpt2train.config import load_config
from gpt2train.config_paths import CONFIG_DIR
from gpt2train.errors import DataError
from gpt2train.training.hellaswag import HELLASWAG_VAL_URL, load_hellaswag, local_hellaswag_file
from gpt2train.training.llmc import header_launch_command, parse_launch_command, preset_differences
from gpt2train.model_config import GPTConfig
from tests.paths import SHARED

PRESETS = ["gpt2_124m", "gpt2_350m", "gpt2_774m", "gpt2_1558m"]
SIZES = {"gpt2_124m": "124M", "gpt2_350m": "350M", "gpt2_774m": "774M", "gpt2_1558m": "1558M"}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_is_the_llmc_run_its_header_quotes(preset):
    path = CONFIG_DIR / f"{preset}.yaml"
    command = header_launch_command(path)
    assert command and command.startswith("mpirun -np 8 ./train_gpt2cu ")
    assert preset_differences(path) == []
    launch = parse_launch_command(command)
    cfg = load_config(preset)
    t = cfg.train
    # What the issue found missing, now the llm.c run's own settings.
    assert t.checkpoint_every == int(launch.flags["-n"]) > 0
    assert t.hellaswag_every == -1 and t.hellaswag_file == HELLASWAG_VAL_URL
    assert t.zero_stage == 1 and cfg.launch.nproc_per_node == 8 == launch.processes
    assert cfg.model.descriptor == launch.flags["-e"]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_presets_reports_show_published_figures_for_its_size(preset):
    cfg = load_config(preset)
    shape = GPTConfig.from_descriptor(cfg.model.descriptor)
    size = model_size(shape.n_layer, shape.n_embd, None)
    assert size.published == SIZES[preset]
    figures = published_baselines()["models"][size.published]
    assert {"gpt2_hellaswag_llmc", "gpt3_hellaswag", "gpt2_val_loss_fineweb"} <= set(figures)
    assert cfg.evals.baselines_file is None  # the project's own table (evals/published.py)


def _preset_copy(tmp_path: Path, preset: str, edit) -> Path:
    text = (CONFIG_DIR / f"{preset}.yaml").read_text()
    out = tmp_path / f"{preset}-edited.yaml"
    out.write_text(edit(text).replace("data_dir: ../data/", f"data_dir: {tmp_path}/"))
    return out


def test_a_body_that_disagrees_with_its_header_is_named(tmp_path):
    edited = _preset_copy(tmp_path, "gpt2_124m", lambda s: s.replace("checkpoint_every: 5000", "checkpoint_every: 1000")
                          .replace("nproc_per_node: 8", "nproc_per_node: 4"))
    assert preset_differences(edited) == ["train.checkpoint_every: preset 1000, llm.c 5000",
                                          "launch.nproc_per_node: preset 4, llm.c 8"]


def test_a_flag_the_line_leaves_out_takes_llmcs_default(tmp_path):
    # Without `-s 20000` llm.c samples every 20 steps (its default); the body still says 20000.
    edited = _preset_copy(tmp_path, "gpt2_124m", lambda s: s.replace("-s 20000 ", ""))
    assert preset_differences(edited) == ["train.sample_every: preset 20000, llm.c 20"]
    # Without -d, llm.c's total batch is B x T x processes: 64 x 1024 x 8, which is the body's too.
    edited = _preset_copy(tmp_path, "gpt2_124m", lambda s: s.replace("-d 524288 ", ""))
    assert preset_differences(edited) == []


def test_llmc_flags_parse_as_llmc_reads_them():
    launch = parse_launch_command('./train_gpt2cu -b 8 -f 0 -h 0 -e "d6"')
    settings = launch.settings()
    assert launch.processes == 1
    assert settings["train.tf32"] == "false" and settings["train.hellaswag_every"] == "0"
    assert settings["train.total_batch_tokens"] == str(8 * 1024)  # -d absent: B x T x 1
    assert settings["train.recompute"] == "1" and settings["train.val_every"] == "20"  # llm.c's defaults
    with pytest.raises(ValueError, match="unknown llm.c flag"):
        parse_launch_command("./train_gpt2cu -zz 1")


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def hellaswag_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(SHARED / "data" / "hellaswag-format" / "invented_val.jsonl", served / "hellaswag_val.jsonl")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Files(*a, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hellaswag_val.jsonl", server
    finally:
        server.shutdown()
        server.server_close()


def test_a_hellaswag_url_is_downloaded_once_and_reused_offline(tmp_path, hellaswag_server):
    url, server = hellaswag_server
    data_dir = tmp_path / "data"
    path = local_hellaswag_file(url, data_dir)
    assert path == data_dir / "hellaswag" / "hellaswag_val.jsonl"
    assert len(load_hellaswag(path)) == 50
    server.shutdown()  # offline from here on: the copy is reused
    assert local_hellaswag_file(url, data_dir) == path
    assert [p.name for p in path.parent.iterdir()] == ["hellaswag_val.jsonl"]  # no temp file left


def test_an_unreachable_hellaswag_url_says_where_to_put_the_file(tmp_path, hellaswag_server):
    url, server = hellaswag_server
    missing = url.replace("hellaswag_val.jsonl", "nope.jsonl")
    with pytest.raises(DataError, match=r"cannot download .*nope\.jsonl .*put the file at .*hellaswag/nope\.jsonl"):
        local_hellaswag_file(missing, tmp_path)
    assert not (tmp_path / "hellaswag").exists() or not any((tmp_path / "hellaswag").iterdir())
