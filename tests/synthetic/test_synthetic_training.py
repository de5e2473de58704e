"""Batched training of several widths equals training each width alone with the same seed."""

import numpy as np
import torch

from olmo_injection.synthetic.config import SyntheticConfig
from olmo_injection.synthetic.mixture import iid_task_sampler, sample_batch, task_prior, task_spectra
from olmo_injection.synthetic.student import BatchedStudent, init_width, width_buckets
from olmo_injection.synthetic.training import inverse_sqrt_factor, stream_seeds, train_widths


def train_one_width_plainly(config: SyntheticConfig, width: int):
    """An independent reference: one width, per-sample decoder lookup, torch's own clip and (non-fused) AdamW."""
    mix, train = config.mixture, config.training
    encoder, decoders = init_width(width, mix.ambient_dim, mix.num_tasks, mix.block_dim, train.seed, torch.float64)
    encoder, decoders = encoder.requires_grad_(), decoders.requires_grad_()
    optimizer = torch.optim.AdamW([encoder, decoders], lr=train.learning_rate, betas=(train.adam_beta1, train.adam_beta2),
                                  eps=train.adam_eps, weight_decay=train.weight_decay, foreach=False)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: inverse_sqrt_factor(s, train.warmup_steps))
    task_seed, input_seed = stream_seeds(train.seed)
    task_generator, input_generator = torch.Generator().manual_seed(task_seed), torch.Generator().manual_seed(input_seed)
    sampler = iid_task_sampler(task_prior(mix), train.batch_size)
    sqrt_spectra = torch.as_tensor(task_spectra(mix)).sqrt()
    for step in range(1, train.steps + 1):
        tasks = sampler(step, task_generator)
        x, y = sample_batch(tasks, mix, sqrt_spectra, input_generator)
        prediction = torch.einsum("bmn,bn->bm", decoders[tasks], x @ encoder.T)
        loss = (prediction - y).pow(2).sum(dim=1).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([encoder, decoders], train.grad_clip)
        optimizer.step()
        schedule.step()
    return encoder.detach(), decoders.detach()


def test_batched_widths_equal_each_width_trained_alone(tiny_config):
    batched = train_widths(tiny_config, progress=False).student
    for index, width in enumerate(tiny_config.training.widths):
        encoder, decoders = train_one_width_plainly(tiny_config, width)
        batched_encoder, batched_decoders = batched.width_parameters(index)
        torch.testing.assert_close(batched_encoder, encoder, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(batched_decoders, decoders, rtol=1e-9, atol=1e-11)


def test_clipping_is_active_in_the_equivalence_fixture(tiny_config):
    """grad_clip = 0.05 keeps clipping active, so a global (cross-width) clip would break the equivalence."""
    mix = tiny_config.mixture
    student = BatchedStudent(tiny_config.training.widths, mix.ambient_dim, mix.num_tasks, mix.block_dim, 0, torch.float64)
    tasks = torch.arange(8) % mix.num_tasks
    x = torch.randn(8, mix.ambient_dim, dtype=torch.float64)
    student.per_width_loss(x, tasks, torch.zeros(8, mix.block_dim, dtype=torch.float64)).sum().backward()
    norms = student.clip_grad_norm_per_width_(tiny_config.training.grad_clip)
    assert torch.all(norms > tiny_config.training.grad_clip)
    torch.testing.assert_close(student.per_width_grad_norm(),
                               torch.full_like(norms, tiny_config.training.grad_clip), rtol=1e-4, atol=0)


def test_forward_matches_per_sample_decoding_and_padding_stays_zero(tiny_config):
    result = train_widths(tiny_config, progress=False)
    student = result.student
    mix = tiny_config.mixture
    tasks = torch.tensor([3, 0, 2, 0, 1, 3])
    x = torch.randn(6, mix.ambient_dim, dtype=torch.float64)
    predictions = student(x, tasks)
    for index in range(student.num_widths):
        encoder, decoders = student.width_parameters(index)
        expected = torch.einsum("bmn,bn->bm", decoders[tasks], x @ encoder.T)
        torch.testing.assert_close(predictions[:, :, index], expected)
        padded = student.decoders[student.bucket_of_width[index]].detach()[student.slot_of_width[index]]
        assert torch.all(padded[:, :, student.widths[index]:] == 0)


def test_width_buckets_bound_the_padding():
    assert width_buckets((2, 3, 4, 5, 9, 20)) == [[0, 1, 2], [3, 4], [5]]
    assert width_buckets((4,)) == [[0]]


def test_training_reduces_loss_and_records_every_evaluation(tiny_config):
    result = train_widths(tiny_config, progress=False)
    assert result.steps == [0, 10, 20, 25]
    first, last = result.measurements[0], result.final
    assert np.all(last.task_loss.sum(axis=1) < first.task_loss.sum(axis=1))
    assert last.normalised_loss.shape == (3, tiny_config.mixture.num_tasks)


def test_chunk_layout_puts_each_row_in_its_own_tasks_chunk_without_collisions(tiny_config):
    mix = tiny_config.mixture
    student = BatchedStudent((2, 5), mix.ambient_dim, mix.num_tasks, mix.block_dim, 0, torch.float64)
    tasks = torch.tensor([3, 0, 0, 0, 0, 0, 0, 2, 0, 3])            # B = 10, K = 4: chunks of 3 rows
    slot, chunk_task, rows_per_chunk = student._chunk_layout(tasks)
    assert rows_per_chunk == 3
    assert chunk_task.tolist() == [0, 0, 0, 2, 3]                   # 7 rows of task 0 need 3 chunks
    assert len(set(slot.tolist())) == len(tasks)
    assert torch.equal(chunk_task[slot // rows_per_chunk], tasks)
