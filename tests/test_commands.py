"""The library's audit sub-commands, run through the real ``olmo-inject`` parser."""

from pathlib import Path

import pytest

from olmo_injection import commands

CONFIG = str(Path(__file__).parents[1] / "configs" / "tiny.yaml")


def run(argv):
    import argparse

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command", required=True))
    args, unknown = parser.parse_known_args(argv)
    args.overrides = [u.lstrip("-") for u in unknown]
    return args.func(args)


def test_schedule_prints_what_the_data_loader_injects(tmp_path, capsys):
    from olmo_injection.config import InjectionTrainConfig
    from olmo_injection.schedule import InjectionSchedule
    from olmo_injection.tasks import build_tasks

    csv_path = tmp_path / "schedule.csv"
    overrides = [f"--save_folder={tmp_path / 'run'}"]
    run(["schedule", CONFIG, "--steps", "3:6", "--world-size", "2", "--csv", str(csv_path), *overrides])
    lines = [l.split("\t") for l in capsys.readouterr().out.splitlines() if l and not l.startswith("#")]
    header, rows = lines[0], lines[1:]
    cfg = InjectionTrainConfig.load(CONFIG, [o.lstrip("-") for o in overrides])
    schedule = InjectionSchedule.from_config(cfg, build_tasks(cfg))
    expected = [(b + 1, s, i) for b in range(2, 6) for s, i in zip(*(schedule.injections(b).slots, schedule.injections(b).instances))]
    got = [(int(r[header.index("step")]), int(r[header.index("slot")]), int(r[header.index("instance")])) for r in rows]
    assert got == expected and len(got) > 0
    assert csv_path.read_text().count("\n") == len(rows) + 1


def test_schedule_refuses_bad_step_range(tmp_path):
    with pytest.raises(SystemExit, match="--steps"):
        run(["schedule", CONFIG, "--steps", "5:2", f"--save_folder={tmp_path}"])


def test_schedule_refuses_bad_injection_config_before_building_anything(tmp_path):
    with pytest.raises(ValueError, match="injection.tasks.0.schedule.instances_per_token=0.5"):
        run(["schedule", CONFIG, f"--save_folder={tmp_path}", "--injection.tasks.0.schedule.instances_per_token=0.5"])
    assert not (tmp_path / "tasks").exists()


def test_tasks_writes_the_task_files(tmp_path, capsys):
    run(["tasks", CONFIG, f"--save_folder={tmp_path}"])
    out = capsys.readouterr().out
    assert "cmp (cmp): 5000 train / 5000 test" in out
    assert len(list((tmp_path / "tasks").glob("*.json"))) == 2
