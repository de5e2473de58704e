"""The injecting data path on OLMo's real MemMapDataset / IterableDataset / DataLoader."""

import numpy as np
import pytest
import torch
from olmo.data import build_train_dataloader

from olmo_injection.injecting_dataset import (
    INJECTED_INSTANCE,
    INJECTED_TASK,
    InjectionCollator,
    build_injecting_train_dataloader,
    task_token_mask,
)
from olmo_injection.schedule import InjectionSchedule
from olmo_injection.tasks import build_tasks


def device_batches(cfg, tasks, *, world_size=1, rank=0, start_index=0, num_batches=None):
    loader = build_injecting_train_dataloader(cfg, tasks, world_size=world_size, rank=rank)
    loader.dataset.start_index = start_index
    out = []
    for batch in loader:
        out.append(batch)
        if num_batches is not None and len(out) == num_batches:
            break
    return out


def global_batches(cfg, tasks, world_size, **kwargs):
    """Reassemble global batches from every rank's device batches (OLMo interleaves ranks)."""
    cfg.device_train_batch_size = cfg.global_train_batch_size // world_size
    per_rank = [device_batches(cfg, tasks, world_size=world_size, rank=r, **kwargs) for r in range(world_size)]
    merged = []
    for step in zip(*per_rank):
        rows = {}
        for key in ("input_ids", "index", INJECTED_TASK, INJECTED_INSTANCE, "global_position"):
            full = torch.empty((cfg.global_train_batch_size,) + step[0][key].shape[1:], dtype=step[0][key].dtype)
            for r, batch in enumerate(step):
                full[r::world_size] = batch[key]
            rows[key] = full
        merged.append(rows)
    return merged


def assert_same_batches(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        for key in x:
            assert torch.equal(x[key], y[key]), key


def test_olmo_loader_fact_ranks_are_interleaved(make_config):
    """docs/olmo_0_6_0.md#data-order: row j of rank r is global slot r + world_size * j; our reassembly needs it."""
    cfg = make_config(global_batch=8, world_size=2)
    cfg.save_overwrite = True
    plain = [build_train_dataloader(cfg, world_size=2, rank=r) for r in range(2)]
    order = np.memmap(plain[0].dataset.global_indices_file, dtype=np.uint32, mode="r")
    first = [next(iter(loader))["index"] for loader in plain]
    assert first[0].tolist() == order[0:8:2].tolist() and first[1].tolist() == order[1:8:2].tolist()


def test_injected_rows_hold_the_scheduled_instances(make_config):
    cfg = make_config()
    tasks = build_tasks(cfg)
    schedule = InjectionSchedule.from_config(cfg, tasks)
    batches = device_batches(cfg, tasks)
    assert len(batches) == (64 * 16 * 12 // 16) // 8
    total = 0
    for b, batch in enumerate(batches):
        inj = schedule.injections(b)
        assert batch[INJECTED_TASK][inj.slots].tolist() == inj.tasks.tolist()
        assert batch[INJECTED_INSTANCE][inj.slots].tolist() == inj.instances.tolist()
        for slot, t, i in zip(inj.slots, inj.tasks, inj.instances):
            assert batch["input_ids"][slot, :4].tolist() == tasks[t].sequences([i])[0].tolist()
        untouched = batch[INJECTED_TASK] < 0
        assert (batch[INJECTED_INSTANCE][untouched] == -1).all()
        total += len(inj)
    assert total > 10  # both tasks actually fire in this config
    assert batches[0]["global_position"].tolist() == list(range(8))


def test_global_positions_continue_across_epochs(make_config):
    cfg = make_config()
    loader = build_injecting_train_dataloader(cfg, build_tasks(cfg))
    first = [b["global_position"] for b in loader]
    loader.dataset.reshuffle(epoch=1)
    second = [b["global_position"] for b in loader]
    assert second[0][0] == first[-1][-1] + 1 == len(first) * cfg.global_train_batch_size


def test_untouched_rows_equal_olmos_plain_loader(make_config):
    cfg = make_config()
    tasks = build_tasks(cfg)
    ours = device_batches(cfg, tasks)
    cfg.save_overwrite = True
    plain = list(build_train_dataloader(cfg))
    for a, b in zip(ours, plain):
        assert torch.equal(a["index"], b["index"])
        assert torch.equal(a["input_ids"][:, 4:], b["input_ids"][:, 4:])
        rows = a[INJECTED_TASK] < 0
        assert torch.equal(a["input_ids"][rows], b["input_ids"][rows])


@pytest.mark.parametrize("world_size", [2, 4])
def test_global_batches_do_not_depend_on_world_size(make_config, world_size):
    cfg = make_config()
    tasks = build_tasks(cfg)
    assert_same_batches(global_batches(cfg, tasks, 1), global_batches(cfg, tasks, world_size))


def test_global_batches_do_not_depend_on_data_loader_workers(make_config):
    cfg0 = make_config(num_workers=0)
    tasks = build_tasks(cfg0)
    cfg2 = make_config(num_workers=2)
    assert_same_batches(global_batches(cfg0, tasks, 2), global_batches(cfg2, tasks, 2))


@pytest.mark.parametrize("step", [1, 5, 11])
def test_resume_at_any_step_sees_the_uninterrupted_stream(make_config, step):
    cfg = make_config()
    tasks = build_tasks(cfg)
    full = global_batches(cfg, tasks, 2)
    resumed = global_batches(cfg, tasks, 2, start_index=step * cfg.global_train_batch_size)
    assert_same_batches(full[step:], resumed)


def test_task_token_mask_marks_the_four_injected_positions(make_config):
    cfg = make_config()
    batch = device_batches(cfg, build_tasks(cfg), num_batches=2)[1]
    mask = task_token_mask(batch)
    rows = batch[INJECTED_TASK] >= 0
    assert mask[rows, :4].all() and not mask[rows, 4:].any() and not mask[~rows].any()


def test_micro_batch_split_keeps_injection_fields_aligned(make_config):
    from olmo.train import Trainer

    cfg = make_config()
    batch = device_batches(cfg, build_tasks(cfg), num_batches=1)[0]
    cfg.device_train_microbatch_size = 3
    fake = type("T", (), {"cfg": cfg})()
    micro = Trainer.split_batch(fake, batch)  # OLMo's own splitter: extra keys must be per-row tensors
    assert torch.equal(torch.cat([m[INJECTED_TASK] for m in micro]), batch[INJECTED_TASK])
    assert torch.equal(torch.cat([m["input_ids"] for m in micro]), batch["input_ids"])


def every_row_collator(num_rows):
    """A collator whose schedule injects instance ``k`` of one task into every row (gap mode, n = GBS)."""
    from olmo_injection.schedule import TaskRate

    schedule = InjectionSchedule(0, [TaskRate("gap", n=num_rows, gap=1)], [np.arange(10)], num_rows)
    sequences = [torch.tensor([[7, 8, 9, 50279]] * 10)]
    return InjectionCollator(pad_direction="right", pad_token_id=1, schedule=schedule, sequences=sequences)


def test_splice_keeps_label_mask_attention_and_document_lengths():
    from olmo.data.util import get_document_lengths

    ids = torch.arange(100, 116)
    item = {
        "input_ids": ids.clone(),
        "label_mask": torch.tensor([False] * 6 + [True] * 10),
        "attention_mask": torch.tensor([0] * 2 + [1] * 14),
        "doc_lens": get_document_lengths(ids, 50279),
        "global_position": 0,
    }
    batch = every_row_collator(1)([item])
    assert batch["input_ids"][0, :4].tolist() == [7, 8, 9, 50279] and torch.equal(batch["input_ids"][0, 4:], ids[4:])
    assert batch["label_mask"][0, :4].all() and not batch["label_mask"][0, 4:6].any()
    assert batch["attention_mask"][0, :4].tolist() == [1, 1, 1, 1]
    assert batch["doc_lens"][0].tolist() == [4, 12]
    assert batch[INJECTED_TASK].tolist() == [0] and 0 <= batch[INJECTED_INSTANCE].item() < 10


def test_filtered_instance_keeps_only_the_injected_tokens_in_the_loss():
    schedule_rows = every_row_collator(2)
    filtered = {"input_ids": torch.arange(100, 116), "instance_mask": False, "index": 1, "global_position": 0}
    kept = {"input_ids": torch.arange(16), "instance_mask": True, "index": 0, "global_position": 1}
    batch = schedule_rows([filtered, kept])
    assert batch["instance_mask"].tolist() == [True, True]
    assert batch["label_mask"][0].tolist() == [True] * 4 + [False] * 12
    assert batch["label_mask"][1].all()


def test_olmo_metadata_and_generated_fields_survive(make_config):
    cfg = make_config(generate_doc_lengths=True, generate_attention_mask=True)
    batch = device_batches(cfg, build_tasks(cfg), num_batches=2)[1]
    rows = (batch[INJECTED_TASK] >= 0).nonzero().flatten()
    assert len(rows) > 0
    for r in rows:
        assert batch["doc_lens"][r][0] == 4
        assert batch["doc_lens"][r].sum() == cfg.model.max_sequence_length
        assert batch["attention_mask"][r, :4].all()
