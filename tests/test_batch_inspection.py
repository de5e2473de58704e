"""``olmo-inject inspect``: the rows it shows are the rows the training data path yields, and their sources."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from olmo_injection.batch_inspection import inspect_batch
from olmo_injection.cli import main
from olmo_injection.injecting_dataset import INJECTED_INSTANCE, INJECTED_TASK, build_injecting_train_dataloader
from olmo_injection.tasks import build_tasks, olmo_tokenizer


@pytest.mark.parametrize("step", [1, 5, 13])  # 13 is in the second epoch (12 batches of 8 per epoch)
def test_inspected_rows_are_the_rows_training_sees(make_config, step):
    cfg = make_config(global_batch=8)
    tasks = build_tasks(cfg)
    loader = build_injecting_train_dataloader(cfg, tasks, world_size=1, rank=0, fs_local_rank=0)
    # OLMo's trainer reshuffles between epochs; the loader's dataset does the same when asked.
    batches = []
    for epoch in itertools.count():
        loader.dataset.reshuffle(epoch)
        batches += list(loader)
        if len(batches) >= step:
            break
    trained = batches[step - 1]
    rows = inspect_batch(cfg, tasks, step)
    tokenizer = olmo_tokenizer(cfg.tokenizer.identifier)
    assert len(rows) == cfg.global_train_batch_size
    for slot, row in enumerate(rows):
        ids = trained["input_ids"][slot].tolist()
        task = int(trained[INJECTED_TASK][slot])
        assert (row.task is None) == (task < 0)
        if row.task is not None:
            assert row.task == tasks[task].name and row.instance == int(trained[INJECTED_INSTANCE][slot])
            assert row.injected_text == tokenizer.decode(ids[:4], skip_special_tokens=False)
        tail = ids[4:] if row.task is not None else ids
        assert row.text == tokenizer.decode(tail, skip_special_tokens=False)
        # The source file at the stated offset holds the row's tokens (after any injected prefix).
        source = np.fromfile(row.source_file, dtype=np.uint16)
        from_file = source[row.token_offset: row.token_offset + len(ids)].tolist()
        assert from_file[len(ids) - len(tail):] == tail
    assert any(r.task is not None for r in rows)  # 2 cmp instances per batch


def test_inspect_cli_shows_one_row_and_refuses_a_bad_step_in_one_line(tmp_path, capsys):
    save_folder = f"--save_folder={tmp_path / 'run'}"
    assert main(["inspect", "configs/tiny.yaml", "--step", "2", "--row", "1", save_folder]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("step 2 slot 1 (rank 0 row 1, position 9) <- ")
    assert main(["inspect", "configs/tiny.yaml", "--step", "0", save_folder]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step=0" in err[0]
    assert not (tmp_path / "run").exists()  # inspecting writes nothing
