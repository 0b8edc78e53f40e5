"""Config loading: presets, `--set` overrides with type checks, unknown keys, ranges, paths."""

from __future__ import annotations

from pathlib import Path

import pytest

import gpt2train
from gpt2train.config import Config, config_to_dict, load_config
from gpt2train.config_paths import CONFIG_DIR, REPO_ROOT, preset_path
from gpt2train.errors import ConfigError

PRESETS = ["tiny", "gpt2_124m", "gpt2_350m", "gpt2_774m", "gpt2_1558m"]


def write_yaml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a shipped preset's relative paths are the working directory's
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert preset_path(name) == CONFIG_DIR / f"{name}.yaml"
    assert CONFIG_DIR.parent == Path(gpt2train.__file__).resolve().parent  # package data, not the checkout's
    assert cfg.shards.tokenizer == "gpt2"
    assert cfg.shards.prefix == "edu_fineweb"
    assert cfg.corpus.dataset == "HuggingFaceFW/fineweb-edu"
    if name == "tiny":
        assert cfg.shards.shard_size == 1_000_000
        assert cfg.corpus.source == str(tmp_path.parent.resolve() / "shared" / "data" / "edu-mini")
        assert cfg.data_dir == str(tmp_path.resolve() / "data")
    else:
        assert cfg.shards.shard_size == 100_000_000
        assert cfg.corpus.source == "hub"  # "hub" is not a path
        assert cfg.data_dir == str(tmp_path.resolve() / "data" / name)
    expected_name = "sample-10BT" if name in ("tiny", "gpt2_124m") else "sample-100BT"
    assert cfg.corpus.name == expected_name
    # a code location given the CLI's folder resolves them as the CLI did, wherever it runs
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(name, base_dir=tmp_path) == cfg


def test_default_is_tiny_and_path_equals_name():
    assert load_config() == load_config("tiny") == load_config(CONFIG_DIR / "tiny.yaml")


def test_config_to_dict_is_plain():
    d = config_to_dict(load_config("tiny"))
    assert d["shards"]["shard_size"] == 1_000_000
    assert {"data_dir", "corpus", "shards"} <= set(d)
    assert d["corpus"]["source"].endswith("edu-mini")


def test_missing_preset_lists_known(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config("no_such_preset")
    msg = str(e.value)
    assert "\n" not in msg and "--config no_such_preset: no such preset and no such file; shipped presets:" in msg
    for name in PRESETS:
        assert name in msg
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_and_non_mapping(tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", "shards: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as e:
        load_config(bad)
    assert str(bad) in str(e.value)
    lst = write_yaml(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)
    scalar_section = write_yaml(tmp_path / "sec.yaml", "shards: 5\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar_section)


# ---------------------------------------------------------------- overrides


def test_overrides_apply_and_parse_yaml_values(tmp_path):
    cfg = load_config("tiny", overrides=[
        "shards.shard_size=200000",
        "shards.threads=3",
        "corpus.files=2",
        "corpus.max_documents_per_file=null",
        "shards.val_file=sample/10BT/001_00000.parquet",
        "shards.prefix=my_corpus",
        f"data_dir={tmp_path / 'out'}",
    ])
    assert cfg.shards.shard_size == 200000 and isinstance(cfg.shards.shard_size, int)
    assert cfg.shards.threads == 3
    assert cfg.corpus.files == 2
    assert cfg.corpus.max_documents_per_file is None
    assert cfg.shards.val_file == "sample/10BT/001_00000.parquet"
    assert cfg.shards.prefix == "my_corpus"
    assert cfg.data_dir == str(tmp_path / "out")
    # the preset itself is untouched by overrides of an earlier load
    assert load_config("tiny").shards.shard_size == 1_000_000


def test_override_relative_path_resolves_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("tiny", overrides=["data_dir=rel/out", "corpus.source=src"])
    assert cfg.data_dir == str(tmp_path.resolve() / "rel" / "out")
    assert cfg.corpus.source == str(tmp_path.resolve() / "src")
    assert load_config("tiny", overrides=["corpus.source=hub"]).corpus.source == "hub"


@pytest.mark.parametrize("value", ["abc", "1.5", "1e5", "true", "[1, 2]"])
def test_override_int_type_checked(value):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", overrides=[f"shards.shard_size={value}"])
    msg = str(e.value)
    assert "shards.shard_size" in msg
    assert "int" in msg


@pytest.mark.parametrize("value", ["abc", "2.5"])
def test_override_optional_int_type_checked(value):
    with pytest.raises(ConfigError, match=r"corpus\.files") as e:
        load_config("tiny", overrides=[f"corpus.files={value}"])
    assert "int" in str(e.value)


def test_override_unknown_key_lists_known():
    with pytest.raises(ConfigError) as e:
        load_config("tiny", overrides=["shards.shard_sise=5"])
    msg = str(e.value)
    assert "shard_sise" in msg
    for known in ("tokenizer", "shard_size", "prefix", "val_file", "threads", "batch_documents"):
        assert known in msg
    with pytest.raises(ConfigError) as e:
        load_config("tiny", overrides=["shardz.shard_size=5"])
    msg = str(e.value)
    assert "shardz" in msg and "data_dir" in msg and "corpus" in msg and "shards" in msg


def test_override_malformed():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("tiny", overrides=["shards.shard_size"])
    with pytest.raises(ConfigError, match="is a section"):
        load_config("tiny", overrides=["shards=5"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config("tiny", overrides=["shards.shard_size.x=5"])


# ---------------------------------------------------------------- YAML keys and types


def test_yaml_unknown_top_level_key_lists_known(tmp_path):
    p = write_yaml(tmp_path / "c.yaml", "data_dir: d\nshard_size: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "'shard_size'" in msg
    known = msg.split("known:", 1)[1]
    assert all(k in known for k in ("corpus", "data_dir", "shards"))


def test_yaml_unknown_section_key_lists_known(tmp_path):
    p = write_yaml(tmp_path / "c.yaml", "shards:\n  shard_size: 5\n  tokeniser: gpt2\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "'tokeniser'" in msg
    for known in ("tokenizer", "shard_size", "prefix", "threads"):
        assert known in msg


def test_yaml_wrong_type(tmp_path):
    p = write_yaml(tmp_path / "c.yaml", "shards:\n  shard_size: '1000'\n")
    with pytest.raises(ConfigError, match="shard_size") as e:
        load_config(p)
    assert "'1000'" in str(e.value)
    p = write_yaml(tmp_path / "d.yaml", "corpus:\n  text_field: 5\n")
    with pytest.raises(ConfigError, match="text_field"):
        load_config(p)


def test_empty_yaml_gives_defaults(tmp_path):
    p = write_yaml(tmp_path / "empty.yaml", "")
    cfg = load_config(p)
    assert cfg.shards.shard_size == 100_000_000
    assert cfg.corpus.source == "hub"
    assert cfg.data_dir == str(tmp_path.resolve() / "data")


# ---------------------------------------------------------------- ranges


@pytest.mark.parametrize("override, key", [
    ("shards.shard_size=0", "shards.shard_size"),
    ("shards.shard_size=-5", "shards.shard_size"),
    ("shards.shard_size=2147483648", "shards.shard_size"),
    ("shards.threads=-1", "shards.threads"),
    ("shards.batch_documents=0", "shards.batch_documents"),
    ("corpus.files=0", "corpus.files"),
    ("corpus.max_documents_per_file=0", "corpus.max_documents_per_file"),
    ("shards.prefix=a/b", "shards.prefix"),
])
def test_range_validation(override, key):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", overrides=[override])
    assert key in str(e.value)


def test_range_boundaries_accepted():
    cfg = load_config("tiny", overrides=["shards.shard_size=1", "shards.threads=0",
                                         "shards.shard_size=2147483647"])
    assert cfg.shards.shard_size == 2**31 - 1 and cfg.shards.threads == 0


def _number_fields(cls: type, prefix: str = "") -> list[str]:
    """Dotted names of every int / float field (optional ones too) of a config dataclass, nested sections included."""
    import dataclasses
    import typing

    names = []
    for f in dataclasses.fields(cls):
        ftype = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(ftype):
            names += _number_fields(ftype, f"{prefix}{f.name}.")
        elif {int, float} & {ftype, *typing.get_args(ftype)}:
            names.append(prefix + f.name)
    return names


def test_every_number_field_has_a_range():
    from gpt2train.config_checks import NUMBER_RANGES

    fields = _number_fields(Config)
    assert "train.grad_clip" in fields and "train.seed" in fields  # the walk finds them
    missing = sorted(set(fields) - set(NUMBER_RANGES))
    assert not missing, f"number fields without a range in config_checks.NUMBER_RANGES: {missing}"
    assert not set(NUMBER_RANGES) - set(fields), "ranges for fields that are not there"


def _out_of_range_values(allowed, is_float: bool) -> list:
    below = allowed.low if allowed.low_open else (allowed.low - 1e-3 if is_float else allowed.low - 1)
    above = allowed.high * 1.5 if is_float else allowed.high + 1
    return [below, above, *([".nan", ".inf", "-.inf"] if is_float else [])]


def _numbers_with_ranges():
    import typing

    from gpt2train.config_checks import NUMBER_RANGES

    defaults = Config()
    for dotted, allowed in NUMBER_RANGES.items():
        *sections, name = dotted.split(".")
        owner = defaults
        for part in sections:
            owner = getattr(owner, part)
        ftype = typing.get_type_hints(type(owner))[name]
        is_float = float in {ftype, *typing.get_args(ftype)}
        for value in _out_of_range_values(allowed, is_float):
            yield pytest.param(dotted, value, id=f"{dotted}={value}")


@pytest.mark.parametrize("dotted, value", list(_numbers_with_ranges()))
def test_every_number_out_of_its_range_is_refused_naming_the_field(dotted, value):
    """Just outside each end of its range, and NaN / +-Inf for a float: a one-line error at load that
    names the field and the range (before any other check does arithmetic on it)."""
    from gpt2train.config_checks import NUMBER_RANGES

    with pytest.raises(ConfigError) as e:
        load_config("tiny", overrides=[f"{dotted}={value}"])
    message = str(e.value)
    assert "\n" not in message
    assert f"{dotted}=" in message and str(NUMBER_RANGES[dotted]) in message, message
    if isinstance(value, str):
        assert "is not a finite number" in message


def test_every_number_range_end_is_accepted_where_other_fields_allow_it():
    """Both ends of every range load (with the fields a cross-field rule ties it to moved along), so a
    range never refuses a value it claims to allow."""
    from gpt2train.config_checks import NUMBER_RANGES

    tied = {  # a cross-field rule's partners: B x T must divide the total, T <= block_size, ...
        "train.batch_size": lambda v: [f"train.total_batch_tokens={v * 64}"],
        "train.seq_len": lambda v: [f"model.block_size={max(v, 1)}", f"train.total_batch_tokens={4 * v}"],
        "model.block_size": lambda v: [f"train.seq_len={v}", f"train.total_batch_tokens={4 * v}"],
        "train.total_batch_tokens": lambda v: ["train.batch_size=1", "train.seq_len=1"],
        "launch.nproc_per_node": lambda v: [f"train.total_batch_tokens={256 * v}"],
        "train.hellaswag_every": lambda v: [f"train.hellaswag_file={REPO_ROOT / 'README.md'}"],
    }
    for dotted, allowed in NUMBER_RANGES.items():
        ends = [allowed.high] if allowed.low_open else [allowed.low, allowed.high]
        for value in ends:
            extra = tied.get(dotted, lambda v: [])(value)
            cfg = load_config("tiny", overrides=[*extra, f"{dotted}={value}"])
            owner = cfg
            for part in dotted.split("."):
                owner = getattr(owner, part)
            assert owner == value, dotted


def test_range_validation_in_yaml(tmp_path):
    p = write_yaml(tmp_path / "c.yaml", "shards:\n  shard_size: 0\n")
    with pytest.raises(ConfigError, match="shards.shard_size=0") as e:
        load_config(p)
    assert str(p) in str(e.value)
    p = write_yaml(tmp_path / "t.yaml", "shards:\n  threads: -1\n")
    with pytest.raises(ConfigError, match="shards.threads=-1"):
        load_config(p)


# ---------------------------------------------------------------- paths


def test_relative_paths_resolve_against_yaml_folder(tmp_path, monkeypatch):
    p = write_yaml(tmp_path / "project" / "configs" / "mine.yaml",
                   "data_dir: ../out\ncorpus:\n  source: ../corpus/files\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(p)
    assert cfg.data_dir == str((tmp_path / "project" / "out").resolve())
    assert cfg.corpus.source == str((tmp_path / "project" / "corpus" / "files").resolve())
    # also when the YAML path itself is given relative to the cwd
    monkeypatch.chdir(tmp_path / "project")
    cfg2 = load_config("configs/mine.yaml")
    assert cfg2.data_dir == cfg.data_dir and cfg2.corpus.source == cfg.corpus.source


def test_absolute_and_glob_paths_kept(tmp_path):
    src = tmp_path / "c" / "*.parquet"
    p = write_yaml(tmp_path / "x" / "a.yaml", f"data_dir: {tmp_path / 'abs'}\ncorpus:\n  source: '{src}'\n")
    cfg = load_config(p)
    assert cfg.data_dir == str(tmp_path / "abs")
    assert cfg.corpus.source == str(src)


# ---------------------------------------------------------------- checks moved before any work (issue #6)


@pytest.mark.parametrize("args, world", [([], 2), (["--nnodes=4"], 8), (["--nnodes", "3", "--node-rank=0"], 6),
                                         (["--nnodes=1:4"], 2)])  # an elastic range: known only at rendezvous
def test_launch_world_size_counts_nodes(args, world):
    from gpt2train.config import LaunchConfig

    assert LaunchConfig(nproc_per_node=2, torchrun_args=args).world_size == world


def test_total_batch_must_divide_over_the_launched_world():
    load_config("tiny", ["launch.nproc_per_node=2"])  # 512 = 4*64*2: fine
    with pytest.raises(ConfigError, match=r"batch_size\*seq_len\*world=4\*64\*4=1024"):
        load_config("tiny", ["launch.nproc_per_node=2", "launch.torchrun_args=[--nnodes=2]"])


def test_model_descriptor_is_checked_at_load():
    assert load_config("tiny", ["model.descriptor=gpt2:d12", "model.block_size=1024"]).model.descriptor == "gpt2:d12"
    with pytest.raises(ConfigError, match=r"model\.descriptor: unknown model descriptor 'd7'"):
        load_config("tiny", ["model.descriptor=d7"])


# ---------------------------------------------------------------- where a config may write


@pytest.mark.parametrize("data_dir, why", [
    ("/", "the filesystem root"), ("/etc", "a system directory"), ("/usr/share/gpt2", "a system directory"),
    ("/bin", "a system directory"), ("/proc/self", "a system directory"),
    (str(Path.home()), "the home directory itself"),
    ("/home", "holds other users' or the system's files directly"), ("/var", "holds other users'"),
    (str(Path.home() / ".ssh" / "gpt2"), "inside a credentials folder"),
])
def test_data_dir_itself_must_be_a_folder_of_its_own(data_dir, why, tmp_path):
    # In a YAML (whose own data_dir is what its written paths are checked against) and with --set.
    p = write_yaml(tmp_path / "received.yaml", f"data_dir: {data_dir}\n")
    for load in (lambda: load_config(p), lambda: load_config("tiny", [f"data_dir={data_dir}"])):
        with pytest.raises(ConfigError, match=f"data_dir=.* resolves to .*{why}.*set it to a folder of its own"):
            load()


def test_data_dir_symlinked_to_a_system_directory_is_refused(tmp_path):
    (tmp_path / "data").symlink_to("/etc")
    with pytest.raises(ConfigError, match="resolves to /etc, a system directory"):
        load_config("tiny", [f"data_dir={tmp_path / 'data'}"])


def test_data_dir_inside_home_or_tmp_is_fine(tmp_path):
    assert load_config("tiny", [f"data_dir={tmp_path / 'data'}"]).data_dir == str(tmp_path / "data")
    assert load_config("tiny", [f"data_dir={Path.home() / 'gpt2-data'}"]).data_dir == str(Path.home() / "gpt2-data")


def test_an_explicit_written_path_may_leave_data_dir_but_not_enter_a_system_directory(tmp_path):
    cfg = load_config("tiny", [f"data_dir={tmp_path / 'data'}", f"train.out_dir={tmp_path / 'elsewhere'}"])
    assert cfg.train.out_dir == str(tmp_path / "elsewhere")  # the user's explicit choice (llm.c's -o)
    with pytest.raises(ConfigError, match=r"train\.out_dir=/root/\.ssh/run resolves to .* inside a credentials"):
        load_config("tiny", [f"data_dir={tmp_path / 'data'}", "train.out_dir=/root/.ssh/run"])
