"""The datasets MASN extracts and trains on, one module each: TGIF-QA (``tgif``), MSVD-QA
(``msvd``), MSRVTT-QA (``msrvtt``), NExT-QA (``nextqa``) and your own collection
(``folder``).

A dataset module declares one :class:`~masn.datasets.spec.Dataset` (its videos' keys, question
files and reader, tasks, official names and published results) and is an entry point of
``masn.datasets`` (:mod:`masn.registry`). Everything else reads datasets from here: the
choices of ``--dataset`` and ``--task``, the official file names, the official task names.
Torch-free.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from masn.datasets.spec import Dataset, TaskSpec
from masn.errors import InvalidInput, UnknownName
from masn.registry import Registry

if TYPE_CHECKING:
    from masn.model.config import Task

DATASETS: Registry[Dataset] = Registry("dataset", "masn.datasets")


def dataset_names() -> tuple[str, ...]:
    """Every dataset's name (imports none of their modules)."""
    return DATASETS.names()


def get_dataset(name: str) -> Dataset:
    """The dataset ``name``; an UnknownName listing the known ones."""
    found = DATASETS.get(name)
    if found.name != name:
        raise TypeError(f"the entry point {name!r} of masn.datasets names dataset {found.name!r}")
    return found


@functools.cache
def all_tasks() -> dict[str, TaskSpec]:
    """Every task of every dataset, by name (imports the dataset modules)."""
    tasks: dict[str, TaskSpec] = {}
    for name in dataset_names():
        for task in get_dataset(name).tasks:
            if task.name in tasks:
                raise ValueError(
                    f"datasets {tasks[task.name].dataset} and {name} both have a task {task.name!r}"
                )
            tasks[task.name] = task
    return tasks


def task_spec(name: str, head: Task | None = None) -> TaskSpec:
    """The task ``name`` as its dataset declares it; ``head`` sets the head of a collection of
    your own (``TaskSpec.from_rows``)."""
    tasks = all_tasks()
    if name not in tasks:
        raise UnknownName(f"unknown task {name!r}; choose from {', '.join(tasks)}")
    spec = tasks[name]
    if head is not None and head != spec.head:
        if not spec.from_rows:
            raise InvalidInput(f"the {name} task has a {spec.head} head; --head is for custom only")
        spec = replace(spec, head=head)
    return spec


def official_task(official_name: str) -> list[TaskSpec]:
    """The tasks the official code calls ``official_name`` (MS-QA names two)."""
    found = [task for task in all_tasks().values() if task.official_name == official_name]
    if not found:
        known = sorted({t.official_name for t in all_tasks().values() if t.official_name})
        raise UnknownName(f"unknown official task {official_name!r}; known: {', '.join(known)}")
    return found


DatasetName = Literal[dataset_names()]  # type: ignore[valid-type]
"""The datasets, as the settings and flags accept them."""
TaskName = Literal[tuple(all_tasks())]  # type: ignore[valid-type]
"""The tasks, as the settings and flags accept them."""
OfficialDataset = Literal[  # type: ignore[valid-type]
    tuple(name for name in dataset_names() if get_dataset(name).official is not None)
]
"""The datasets released in the official MASN feature layout."""
PublishedTask = Literal[  # type: ignore[valid-type]
    tuple(name for name, task in all_tasks().items() if task.official_name is not None)
]
"""The tasks the official code trains (its checkpoints can be imported)."""
