"""`gpt2train pipeline`'s DAGSTER_HOME: it writes its dagster.yaml (queue limits, telemetry off) into a
home that has none, a new one or one made by `mkdir -p` as the README's UI section does, and never
touches a dagster.yaml that is there (pipelines/cli.py `prepare_dagster_home`)."""

from __future__ import annotations

import dagster as dg

from pipelines.cli import NEW_INSTANCE_YAML, prepare_dagster_home


def test_a_new_home_gets_the_pipelines_dagster_yaml(tmp_path):
    home = tmp_path / "a" / "home"
    assert prepare_dagster_home(home)
    assert (home / "dagster.yaml").read_text() == NEW_INSTANCE_YAML
    assert [p.name for p in home.iterdir()] == ["dagster.yaml"]  # no temporary file left behind


def test_an_existing_home_without_dagster_yaml_is_completed_and_dagster_reads_it(tmp_path):
    home = tmp_path / "home"
    home.mkdir()  # `mkdir -p $DAGSTER_HOME`, then `dagster dev` may already have written its SQLite files
    (home / "history").mkdir()
    assert prepare_dagster_home(home)
    assert sorted(p.name for p in home.iterdir()) == ["dagster.yaml", "history"]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.telemetry_enabled is False
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 10
    assert not prepare_dagster_home(home)  # now it has one: written once
    assert (home / "dagster.yaml").read_text() == NEW_INSTANCE_YAML


def test_a_users_dagster_yaml_is_never_overwritten(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    mine = "telemetry:\n  enabled: true\n"
    (home / "dagster.yaml").write_text(mine)
    assert not prepare_dagster_home(home)
    assert (home / "dagster.yaml").read_text() == mine
    # A symlink to a file kept elsewhere (a deployment's config), even a dangling one, is the user's too.
    (home / "dagster.yaml").unlink()
    (home / "dagster.yaml").symlink_to(tmp_path / "deploy" / "dagster.yaml")
    assert not prepare_dagster_home(home)
    assert (home / "dagster.yaml").is_symlink() and not (tmp_path / "deploy").exists()


def test_a_home_it_cannot_write_is_left_to_open_instances_one_line_error(tmp_path):
    afile = tmp_path / "home"
    afile.write_text("not a directory")
    assert not prepare_dagster_home(afile)
    assert afile.read_text() == "not a directory"
