"""The tasks of one run draw disjoint vocabularies by construction; explicit token lists are still checked."""

import numpy as np
import pytest

from olmo_injection.config import ScheduleConfig, TaskConfig
from olmo_injection.tasks import build_task, build_tasks


def _cmp(name, seed=0, **kwargs):
    return TaskConfig(name=name, kind="cmp", num_values=16, seed=seed, schedule=ScheduleConfig(instances_per_token=1 / 64),
                      **kwargs)


def test_seeded_tasks_of_one_run_never_share_a_token_even_with_one_seed(make_config):
    tasks = build_tasks(make_config(tasks=[_cmp("a"), _cmp("b"), _cmp("c"),
                                           TaskConfig(name="d", kind="add", num_values=16, seed=0)]))
    sets = [t.token_set() for t in tasks]
    for i, a in enumerate(sets):
        for b in sets[i + 1:]:
            assert not a & b
    # The first task is drawn exactly as it would be alone; later ones avoid what came before.
    alone = build_task(_cmp("a"))
    assert np.array_equal(tasks[0].word_tokens, alone.word_tokens)
    assert not np.array_equal(tasks[1].word_tokens, alone.word_tokens)


def test_task_files_record_what_a_draw_avoided(make_config):
    cfg = make_config(tasks=[_cmp("a"), _cmp("b")])
    first = build_tasks(cfg)
    again = build_tasks(cfg)  # read back from the task files
    assert all(np.array_equal(x.instances, y.instances) for x, y in zip(first, again))
    # Task "b" alone (nothing to avoid) is another task, so it gets another file.
    alone = build_tasks(make_config(tasks=[_cmp("b")]))
    assert not np.array_equal(alone[0].word_tokens, first[1].word_tokens)


def test_explicit_token_lists_that_overlap_an_earlier_task_are_refused(make_config):
    first = build_task(_cmp("a"))
    clash = _cmp("b", tokens=[int(t) for t in first.word_tokens[::-1]])
    with pytest.raises(ValueError, match="share tokens"):
        build_tasks(make_config(tasks=[_cmp("a"), clash]))
