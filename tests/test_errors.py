"""masn.errors: user errors stay one line, also when torch rebuilds them from a DataLoader
worker; root_cause gives a damaged file's own reason."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from masn.errors import InvalidInput, MissingInput, UnknownName, root_cause


class _Damaged(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 2:
            raise InvalidInput("features.h5 video 'v2' holds NaN or infinite values; extract again")
        return torch.zeros(1)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_user_error_in_a_loader_worker_keeps_its_one_line(workers):
    loader = DataLoader(_Damaged(), batch_size=1, num_workers=workers)
    with pytest.raises(InvalidInput) as caught:
        list(loader)
    message = "features.h5 video 'v2' holds NaN or infinite values; extract again"
    assert str(caught.value) == message
    if workers:
        assert "Original Traceback" in caught.value.worker_traceback
        assert "__getitem__" in caught.value.worker_traceback


def test_messages_read_as_plain_text():
    assert str(UnknownName("no video 'a'")) == "no video 'a'"  # KeyError would quote it
    assert str(MissingInput("no file x")) == "no file x"
    assert isinstance(MissingInput("x"), FileNotFoundError)


def test_root_cause_is_the_innermost_first_line():
    try:
        try:
            pickle.loads(b"garbage")
        except pickle.UnpicklingError as inner:
            raise RuntimeError("a page\nof advice") from inner
    except RuntimeError as error:
        assert root_cause(error).startswith("UnpicklingError: ")
        assert "\n" not in root_cause(error)
