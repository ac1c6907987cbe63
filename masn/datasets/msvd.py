"""MSVD-QA (Xu et al., ACM MM 2017): open-ended questions on MSVD clips.

Question files ``{train,val,test}_qa.json`` are one JSON array of ``{"answer": str, "id": int,
"question": str, "video_id": int}`` (MSRVTT-QA's have the same form). Question ``video_id`` N
is the clip ``<youtubeId>_<start>_<end>.avi``, keyed ``vidN`` through MSVD's
``youtube_mapping.txt`` (bundled; ``--mapping`` replaces it). Question types are the first
word (what, who, how, when, where; else "other"). Answer classes: the 1,000 most frequent
training answers.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from masn.datasets.annotations import AnnotationError, QARow, json_array_entries, read_text
from masn.datasets.spec import SPLITS, Dataset, Keyer, OfficialFiles, Published, TaskSpec
from masn.datasets.video_keys import stem
from masn.errors import InvalidInput

log = logging.getLogger(__name__)

MSQA_TYPES = ("what", "who", "how", "when", "where")
QUESTION_TYPES = (*MSQA_TYPES, "other")
_FIELDS = {"answer": str, "id": int, "question": str, "video_id": int}
_NAMES = {str: "a string", int: "an integer"}


def question_type(question: str) -> str:
    """The question type: the first word if it is in MSQA_TYPES, else "other"."""
    words = question.split()
    first = words[0].lower() if words else ""
    return first if first in MSQA_TYPES else "other"


def read_msqa(path: str | Path, prefix: str) -> list[QARow]:
    """Rows of an MSVD-QA or MSRVTT-QA JSON file; video N is keyed ``<prefix>N``."""
    rows: list[QARow] = []
    for index, (line, entry) in enumerate(json_array_entries(path, read_text(path))):
        where = f"{path}:{line}"
        if not isinstance(entry, dict):
            kind = type(entry).__name__
            raise AnnotationError(f"{where}: entry {index}: expected an object, found {kind}")
        for field, kind in _FIELDS.items():
            if field not in entry:
                raise AnnotationError(f"{where}: entry {index}: missing field {field!r}")
            value = entry[field]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise AnnotationError(
                    f"{where}: entry {index}: field {field!r} must be {_NAMES[kind]}, "
                    f"found {value!r}"
                )
        question, answer = entry["question"].strip(), entry["answer"].strip()
        if not question or not answer:
            field = "question" if not question else "answer"
            raise AnnotationError(f"{where}: entry {index}: empty {field}")
        if entry["video_id"] < 0:
            raise AnnotationError(
                f"{where}: entry {index}: negative video_id {entry['video_id']!r}"
            )
        key = f"{prefix}{entry['video_id']}"
        # Entries, not lines, name these questions: the files are one line long.
        source = f"{path} entry {index}"
        rows.append(QARow((key,), question, answer, qtype=question_type(question), source=source))
    if not rows:
        raise AnnotationError(f"{path}: the JSON array has no entries")
    log.debug("read %d rows from %s", len(rows), path)
    return rows


def msqa_files(spec: TaskSpec, folder: Path) -> dict[str, Path]:
    """The train, val and test files of MSVD-QA and MSRVTT-QA."""
    return {split: folder / f"{split}_qa.json" for split in SPLITS}


def load_mapping(path: Path | None = None) -> dict[str, str]:
    """MSVD clip name (``<youtubeId>_<start>_<end>``) -> ``vidN``; the bundled copy by default."""
    if path is None:
        where = "the bundled msvd_youtube_mapping.txt"
        data = resources.files("masn.datasets") / "data" / "msvd_youtube_mapping.txt"
        text = data.read_text(encoding="utf-8")
    else:
        where = str(path)
        text = Path(path).read_text(encoding="utf-8")
    mapping: dict[str, str] = {}
    keys: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise InvalidInput(
                f"{where}, line {number}: expected '<youtubeId>_<start>_<end> vidN', got {line!r}"
            )
        name, key = parts
        if name in mapping or key in keys:
            raise InvalidInput(f"{where}, line {number}: {name} or {key} appears twice")
        mapping[name] = key
        keys.add(key)
    return mapping


def keyer(mapping: Path | None) -> Keyer:
    names = load_mapping(mapping)
    return lambda relative: names.get(stem(relative))


DATASET = Dataset(
    name="msvd",
    title="MSVD-QA",
    tasks=(
        TaskSpec(
            "msvd",
            "msvd",
            "open_ended",
            frames=30,
            batch_size=32,
            answer_top=1000,
            qtypes=QUESTION_TYPES,
            official_name="MS-QA",
            published=Published("accuracy", 38.0),
        ),
    ),
    annotations="data/msvd-qa",
    split_files=msqa_files,
    read=lambda spec, path: read_msqa(path, "vid"),
    keyer=keyer,
    keyed="in the MSVD name mapping",
    video_extension=".avi",
    official=OfficialFiles(
        "msvd_res152_avgpool.hdf5",
        "msvd_i3d_avgpool_perclip.hdf5",
        "msvd_btup_f_obj10.hdf5",
        "msvd_i3d_roialign_perclip_obj10.hdf5",
        key_pattern=r"vid\d+",
        keys="'vid' + video id",
    ),
    links={
        "questions": "https://github.com/xudejing/video-question-answering",
        "videos": "https://www.cs.utexas.edu/users/ml/clamp/videoDescription/",
    },
)
