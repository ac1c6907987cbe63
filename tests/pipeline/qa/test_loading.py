"""How QA batches are read: training steps (StepSampler), evaluation batches and the loader."""

from __future__ import annotations

from itertools import chain

import numpy as np
import pytest
import torch

from masn.datasets import task_spec
from masn.datasets.annotations import QARow
from masn.extract.store.reader import FeatureStore
from masn.pipeline.qa.answer_set import AnswerSet
from masn.pipeline.qa.loading import Loading, StepSampler, evaluation_batches, loader
from masn.pipeline.qa.questions import QADataset, encode_questions
from masn.pipeline.qa.text import Vocabulary, clean_tokens
from tests.builders import random_record, write_store

# --------------------------------------------------------------------------- samplers


@pytest.mark.parametrize(("size", "batch_size"), [(23, 6), (24, 6), (20, 6), (7, 3)])
@pytest.mark.parametrize("world", [2, 3])
def test_step_sampler_ranks_together_see_the_single_process_batches(size, batch_size, world):
    single = StepSampler(size, batch_size, seed=5)
    single.set_epoch(2)
    steps = list(single)
    assert sorted(i for step in steps for i in step) == list(range(size))  # world 1 drops none
    ranks = []
    for rank in range(world):
        sampler = StepSampler(size, batch_size, seed=5, rank=rank, world=world)
        sampler.set_epoch(2)
        ranks.append(list(sampler))
        assert len(sampler) == sampler.steps() == len(ranks[-1])
    assert len({len(batches) for batches in ranks}) == 1  # every rank runs the same steps
    rest = size % batch_size
    dropped = 0 < rest < world
    assert len(ranks[0]) == len(steps) - dropped
    for step, parts in enumerate(zip(*ranks, strict=True)):
        assert all(parts), "every rank gets a question in every step"
        assert sorted(i for part in parts for i in part) == sorted(steps[step])
        assert [i for i in steps[step] if i in parts[0]] == parts[0]  # same order
    if dropped:
        assert len(steps[-1]) == rest


def test_step_sampler_epochs_seeds_and_start():
    sampler = StepSampler(50, 8, seed=1)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    assert list(sampler) == epoch0  # deterministic
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0
    assert sorted(chain(*epoch1)) == sorted(chain(*epoch0)) == list(range(50))
    assert len(epoch0) == 7 and [len(b) for b in epoch0] == [8] * 6 + [2]

    again = StepSampler(50, 8, seed=1)
    again.set_epoch(1)
    assert list(again) == epoch1  # a new sampler with the same seed and epoch agrees
    other = StepSampler(50, 8, seed=2)
    other.set_epoch(1)
    assert list(other) != epoch1

    sampler.set_epoch(1, start=3)
    assert len(sampler) == 4 and list(sampler) == epoch1[3:]
    sampler.set_epoch(1, start=9)
    assert len(sampler) == 0 and list(sampler) == []
    sampler.set_epoch(0)
    assert list(sampler) == epoch0  # set_epoch resets start


def test_step_sampler_last_batch_and_validation():
    assert StepSampler(17, 8, rank=0, world=2).steps() == 2  # last batch of 1 < 2 ranks: dropped
    assert StepSampler(18, 8, rank=1, world=2).steps() == 3  # last batch of 2: kept
    assert StepSampler(17, 8).steps() == 3  # one process keeps a batch of 1
    assert StepSampler(1, 4, world=2).steps() == 0
    with pytest.raises(ValueError, match="smaller than the 3 processes"):
        StepSampler(10, 2, world=3)


@pytest.mark.parametrize(("size", "batch_size", "world"), [(17, 4, 3), (5, 2, 1), (2, 4, 3)])
def test_evaluation_batches_cover_every_question_once(size, batch_size, world):
    shares = [evaluation_batches(size, batch_size, rank, world) for rank in range(world)]
    seen = [i for batches in shares for batch in batches for i in batch]
    assert sorted(seen) == list(range(size))
    assert len(seen) == len(set(seen))
    for rank, batches in enumerate(shares):
        assert all(0 < len(batch) <= batch_size for batch in batches)
        assert all(i % world == rank for batch in batches for i in batch)
    assert evaluation_batches(0, 4) == []
    assert evaluation_batches(5, 2) == [[0, 1], [2, 3], [4]]


def test_step_sampler_counts_the_questions_of_each_step():
    sampler = StepSampler(17, 8, rank=1, world=2)
    assert [sampler.questions(step) for step in range(sampler.steps())] == [8, 8]
    assert [StepSampler(17, 8).questions(step) for step in range(3)] == [8, 8, 1]


# --------------------------------------------------------------------------- loader


def test_loader_reads_the_given_batches_cut_to_the_frames(tmp_path):
    rng = np.random.default_rng(0)
    records = [random_record(f"v{i}", 3 + i, rng, 2, 8, 6) for i in range(5)]
    store = write_store(tmp_path / "features.h5", records)
    rows = [QARow((f"v{i}",), f"what is in video {i}?", "ab"[i % 2]) for i in range(5)]
    vocabulary = Vocabulary.build([row.question for row in rows], clean_tokens)
    spec = task_spec("msvd")
    questions = encode_questions(rows, spec, vocabulary, clean_tokens, AnswerSet(("a", "b")))
    batches = evaluation_batches(len(rows), 2)
    with FeatureStore(store) as source:
        dataset = QADataset(questions, source, 4, "first")
        loaded = list(loader(dataset, batches, Loading(4, "first", 2, 0), torch.device("cpu")))
    assert [batch.index.tolist() for batch in loaded] == batches == [[0, 1], [2, 3], [4]]
    assert [batch.video.lengths.tolist() for batch in loaded] == [[3, 4], [4, 4], [4]]
    assert all(batch.video.appearance.shape[1:] == (4, 8) for batch in loaded)
    assert torch.equal(loaded[1].targets, torch.tensor([0, 1]))
