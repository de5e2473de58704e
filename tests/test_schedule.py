import math
from collections import Counter

import numpy as np
import pytest

from olmo_injection.config import ScheduleConfig
from olmo_injection.schedule import InjectionSchedule, TaskRate, rate_from_config, schedule_table

GBS, SEQ = 64, 128


def make_schedule(rates, n_train=(50, 50), seed=0):
    return InjectionSchedule(seed, rates, [np.arange(0, 2 * n, 2) for n in n_train[: len(rates)]], GBS)


@pytest.mark.parametrize("ipt", [1 / 128, 1e-3, 3.3e-5, 2.4e-8 * 1024 * 4096 / (GBS * SEQ)])
def test_frequency_mode_long_run_count_is_exact(ipt):
    rate = rate_from_config(ScheduleConfig(mode="frequency", instances_per_token=ipt), GBS, SEQ, "s")
    counts = np.array([rate.count(b) for b in range(5000)])
    r = ipt * GBS * SEQ
    assert counts.sum() == math.floor(5000 * r)
    assert set(np.unique(counts)) <= {math.floor(r), math.ceil(r)}  # spread evenly, never bunched
    assert all(rate.cumulative(b) == counts[:b].sum() for b in (0, 1, 17, 4999))


def test_rate_below_one_per_batch_injects_one_every_1_over_r_batches():
    rate = TaskRate("frequency", instances_per_batch=0.1)
    hits = [b for b in range(100) if rate.count(b)]
    assert np.all(np.diff(hits) == 10) and len(hits) == 10


@pytest.mark.parametrize("n, gap, offset", [(1, 1, 0), (10, 10, 0), (20, 20, 5), (100, 100, 0), (3, 7, 2)])
def test_gap_mode_counts(n, gap, offset):
    rate = rate_from_config(ScheduleConfig(mode="gap", n=n, gap=gap, offset=offset), 128, SEQ, "s")
    counts = [rate.count(b) for b in range(1000)]
    expected = [n if b >= offset and (b - offset) % gap == 0 else 0 for b in range(1000)]
    assert counts == expected
    assert rate.cumulative(1000) == sum(expected)


def test_rows_never_collide_and_each_row_holds_one_instance():
    rates = [TaskRate("frequency", instances_per_batch=30.5), TaskRate("gap", n=33, gap=2)]
    schedule = make_schedule(rates)
    for b in range(200):
        inj = schedule.injections(b)
        assert len(set(inj.slots.tolist())) == len(inj) <= GBS
        assert ((inj.slots >= 0) & (inj.slots < GBS)).all()
        assert Counter(inj.tasks.tolist()) == {t: c for t, c in enumerate(r.count(b) for r in rates) if c}


def test_train_instances_cycle_epoch_by_epoch():
    n_train = 50
    schedule = make_schedule([TaskRate("frequency", instances_per_batch=7.0)], n_train=(n_train,))
    seen = np.concatenate([schedule.injections(b).instances for b in range(100)])  # 700 = 14 epochs
    train = np.arange(0, 2 * n_train, 2)
    assert set(seen.tolist()) <= set(train.tolist())
    # Injection order = slot order within a batch, so count per epoch over the whole run instead.
    assert set(Counter(seen.tolist()).values()) == {14}


def test_schedule_is_a_pure_function_of_seed_and_batch():
    rates = [TaskRate("frequency", instances_per_batch=2.5), TaskRate("gap", n=3, gap=4)]
    a, b = make_schedule(rates, seed=1), make_schedule(rates, seed=1)
    for batch in [0, 5, 999, 123_456_789]:  # any order, any batch, fresh objects
        x, y = a.injections(batch), b.injections(batch)
        assert all(np.array_equal(getattr(x, f), getattr(y, f)) for f in ("slots", "tasks", "instances"))
    c = make_schedule(rates, seed=2)
    assert not np.array_equal(a.injections(5).slots, c.injections(5).slots)


def test_schedule_table_maps_slots_to_interleaved_ranks():
    schedule = make_schedule([TaskRate("gap", n=4, gap=1)])
    rows = schedule_table(schedule, 3, 5, ["cmp"], world_size=4)
    assert [r["step"] for r in rows] == [4] * 4 + [5] * 4
    assert all(r["slot"] == r["rank"] + 4 * r["row"] for r in rows)


@pytest.mark.parametrize(
    "schedule, match",
    [
        (ScheduleConfig(mode="frequency", instances_per_token=0.0), "instances_per_token=0.0"),
        (ScheduleConfig(mode="frequency", instances_per_token=-1e-3), "instances_per_token=-0.001"),
        (ScheduleConfig(mode="frequency", instances_per_token=2 / SEQ), "one instance per sequence"),
        (ScheduleConfig(mode="gap", n=0), "n=0"),
        (ScheduleConfig(mode="gap", n=GBS + 1), f"n={GBS + 1}"),
        (ScheduleConfig(mode="gap", n=1, gap=0), "gap=0"),
        (ScheduleConfig(mode="gap", n=1, offset=-1), "offset=-1"),
        (ScheduleConfig(mode="sometimes"), "mode='sometimes'"),
    ],
)
def test_bad_schedules_are_refused(schedule, match):
    with pytest.raises(ValueError, match=match):
        rate_from_config(schedule, GBS, SEQ, "injection.tasks.0.schedule")


def test_tasks_that_cannot_fit_in_a_batch_together_are_refused():
    with pytest.raises(ValueError, match="global_train_batch_size=64"):
        make_schedule([TaskRate("gap", n=40), TaskRate("gap", n=30)])
