"""MSRVTT-QA (Xu et al., ACM MM 2017): open-ended questions on MSR-VTT videos.

Question files as MSVD-QA's (:mod:`masn.datasets.msvd`); question ``video_id`` N is the file
``videoN.mp4``, keyed ``videoN``. Answer classes: the 4,000 most frequent training answers.
"""

from __future__ import annotations

import re

from masn.datasets.msvd import QUESTION_TYPES, msqa_files, read_msqa
from masn.datasets.spec import Dataset, OfficialFiles, Published, TaskSpec
from masn.datasets.video_keys import stem_matching, without_mapping

_NAME = re.compile(r"video\d+")


DATASET = Dataset(
    name="msrvtt",
    title="MSRVTT-QA",
    tasks=(
        TaskSpec(
            "msrvtt",
            "msrvtt",
            "open_ended",
            frames=30,
            batch_size=32,
            answer_top=4000,
            qtypes=QUESTION_TYPES,
            official_name="MS-QA",
            published=Published("accuracy", 35.2),
        ),
    ),
    annotations="data/msrvtt-qa",
    split_files=msqa_files,
    read=lambda spec, path: read_msqa(path, "video"),
    keyer=without_mapping("msrvtt", stem_matching(_NAME)),
    keyed="named videoN.mp4",
    video_extension=".mp4",
    official=OfficialFiles(
        "msrvtt_res152_avgpool.hdf5",
        "msrvtt_i3d_avgpool_perclip.hdf5",
        "msrvtt_btup_f_obj10.hdf5",
        "msrvtt_i3d_roialign_perclip_obj10.hdf5",
        key_pattern=r"video\d+",
        keys="'video' + video id",
    ),
    links={
        "questions": "https://github.com/xudejing/video-question-answering",
        "videos": "https://www.microsoft.com/en-us/research/publication/msr-vtt-a-large-video-description-dataset-for-bridging-video-and-language/",
    },
)
