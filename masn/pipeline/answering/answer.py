"""`masn answer`: one raw video and one question -> the model's answers and a Figure-3-style plot.

The video's features are extracted on the fly by the extraction pipeline of ``masn extract``
(into a temporary store, read back and thrown away), cut or padded to the checkpoint's T frames
exactly as training did, and fed to the trained model with its vocabulary and tokeniser. The
result: the top answers with their scores, the question-guided fusion weights alpha, and a
figure of the fusion attention maps over the question words with the frames the model read.

Scores: open-ended answers get the softmax over the answer classes; multiple-choice candidates
their raw scores (the hinge loss trains a margin, not probabilities; ``masn evaluate`` reports
the same); a count its raw regression output next to the rounded, clamped count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from masn.errors import InvalidInput, MissingInput
from masn.extract.networks.vocab import attribute_names, object_names
from masn.extract.run.one_video import Extractor
from masn.extract.show import frames_at
from masn.extract.store.schema import VideoRecord
from masn.model import MASNConfig, VideoFeatures
from masn.pipeline.answering.figure import AnswerView, draw_answer
from masn.pipeline.answering.settings import AnswerSettings
from masn.pipeline.qa.datasets import candidate_texts, encode_question, pad_video
from masn.pipeline.qa.text import tokeniser
from masn.pipeline.training.checkpoint import Predictor, load_predictor
from masn.pipeline.training.evaluate import top_answers

log = logging.getLogger(__name__)

DIGITS = 6  # decimals of the scores in the result
# Widths of what extraction writes: ResNet-152 and I3D R50 both pool 2048 channels.
EXTRACTED_WIDTHS = {"appearance": 2048, "motion": 2048}
RANDOM_NOTE = "RANDOM WEIGHTS: features and answers are meaningless"


@dataclass
class ModelAnswer:
    """The model's reading of one question on one video.

    answer: the answer text, the chosen candidate, or the rounded count. top: (answer, score),
    best first. alpha: fusion weight per attention (empty without a fusion module). attention:
    each fusion attention map (2L, 2L) of the answered question (the chosen candidate's for
    multiple choice). words: the question's tokens the model read (with the chosen candidate).
    chosen: the video's sampled frames the model read. output: the raw count (count head only).
    unknown: question words outside the vocabulary (read as UNK).
    """

    answer: str | int
    top: list[tuple[str | int, float]]
    alpha: dict[str, float]
    attention: dict[str, np.ndarray]
    words: list[str]
    chosen: np.ndarray
    output: float | None = None
    unknown: tuple[str, ...] = ()


def check_question(predictor: Predictor, question: str, candidates: list[str] | None) -> None:
    """Refuses an empty question, and candidates missing (multiple choice) or unwanted (else)."""
    tokenise = tokeniser(predictor.tokenizer)
    if not tokenise(question):
        raise InvalidInput(f"the question {question!r} has no words")
    head = predictor.spec.head
    if head == "multiple_choice":
        if not candidates or len(candidates) < 2:
            raise InvalidInput(
                "this checkpoint answers multiple-choice questions: pass at least two "
                '--candidates "answer one" "answer two" ...'
            )
        empty = [c for c in candidates if not tokenise(c)]
        if empty:
            raise InvalidInput(f"candidates without words: {empty}")
        if len(set(candidates)) != len(candidates):
            raise InvalidInput(f"the candidates repeat one another: {candidates}")
    elif candidates:
        raise InvalidInput(
            f"this checkpoint has a {head} head; --candidates are for multiple-choice models"
        )


def check_widths(config: MASNConfig, appearance: int, motion: int, origin: str) -> None:
    """Refuses features whose widths differ from the model's (e.g. a model trained on small
    synthetic features cannot read real ones)."""
    wanted = {"appearance": config.appearance_dim, "motion": config.motion_dim}
    given = {"appearance": appearance, "motion": motion}
    if wanted != given:
        raise InvalidInput(
            f"the model reads appearance / motion features of width {wanted['appearance']} / "
            f"{wanted['motion']}, but {origin} gives {given['appearance']} / {given['motion']}: "
            "use a checkpoint trained on features from masn extract"
        )


def video_features(
    record: VideoRecord, frames: int, sampling: str
) -> tuple[VideoFeatures, np.ndarray]:
    """A batch of one video cut or zero-padded to ``frames`` as in training
    (``QADataset.__getitem__``), and the indices of the sampled frames it holds."""
    arrays, chosen = pad_video(record, frames, sampling)
    tensors = {name: torch.from_numpy(a).float().unsqueeze(0) for name, a in arrays.items()}
    lengths = torch.tensor([len(chosen)], dtype=torch.int64)
    return VideoFeatures(**tensors, lengths=lengths), chosen


def answer_record(
    predictor: Predictor,
    record: VideoRecord,
    question: str,
    candidates: list[str] | None = None,
    device: torch.device | str = "cpu",
) -> ModelAnswer:
    """Asks the model ``question`` about the extracted video ``record``."""
    check_question(predictor, question, candidates)
    check_widths(
        predictor.model.config,
        int(record.appearance.shape[-1]),
        int(record.motion.shape[-1]),
        f"the features of {record.key!r}",
    )
    device = torch.device(device)
    video, chosen = video_features(record, predictor.frames, predictor.sampling)
    length = int(record.appearance.shape[0])
    if len(chosen) < length:
        log.info(
            "the video has %d sampled frames; the model reads %d of them (sampling %r)",
            length,
            len(chosen),
            predictor.sampling,
        )
    tokenise = tokeniser(predictor.tokenizer)
    head = predictor.spec.head
    multiple_choice = head == "multiple_choice"
    choices = list(candidates or ()) if multiple_choice else []
    ids, lengths = encode_question(question, choices, predictor.vocabulary, tokenise)
    model = predictor.model.to(device).eval()
    with torch.inference_mode():
        out = model(
            video.to(device, torch.float32),
            torch.from_numpy(ids)[None],
            torch.from_numpy(lengths)[None],
            True,
        )
    output = out.output[0].float().cpu()
    raw = None
    if head == "count":
        raw = float(output)
        answer: str | int = int(model.predict(out.output.float())[0])
        top: list[tuple[str | int, float]] = [(answer, round(raw, DIGITS))]
        pick = 0
    else:
        if not multiple_choice:
            if predictor.answers is None:
                raise InvalidInput("the checkpoint has an open-ended head but no answer classes")
            choices = list(predictor.answers.answers)
        best = top_answers(output, head)
        top = [(choices[i], round(score, DIGITS)) for i, score in best]
        pick = best[0][0]
        answer = choices[pick]
    row = pick if multiple_choice else 0

    def mine(value: torch.Tensor) -> torch.Tensor:
        """The answered question's slice (the chosen candidate's for multiple choice)."""
        return (value[0, row] if multiple_choice else value[0]).float().cpu()

    alpha = None if out.alpha is None else mine(out.alpha).tolist()
    attention = {name: mine(value).numpy() for name, value in out.attention.items()}
    names = model.config.fusion_attentions
    text = candidate_texts(question, choices)[row] if multiple_choice else question
    words = tokenise(text)[: int(lengths.reshape(-1)[row])] or ["UNK"]
    unknown = tuple(
        dict.fromkeys(w for w in tokenise(question) if w not in predictor.vocabulary.words)
    )
    if unknown:
        log.warning("words the model does not know (read as UNK): %s", ", ".join(unknown))
    return ModelAnswer(
        answer=answer,
        top=top,
        alpha={} if alpha is None else dict(zip(names, alpha, strict=True)),
        attention=attention,
        words=words,
        chosen=chosen,
        output=raw,
        unknown=unknown,
    )


def answer_view(
    question: str,
    answer: ModelAnswer,
    names: tuple[str, ...],
    record: VideoRecord,
    frames: np.ndarray | None,
    note: str = "",
) -> AnswerView:
    """The figure's content: ``frames`` are the decoded frames of ``answer.chosen``; ``note``
    a warning line under the question."""
    objects, attributes = object_names(), attribute_names()
    chosen = answer.chosen
    labels = None
    if record.object_labels is not None and record.attribute_labels is not None:
        labels = [
            [f"{attributes[a]} {objects[o]}" for o, a in zip(obj, att, strict=True)]
            for obj, att in zip(
                record.object_labels[chosen], record.attribute_labels[chosen], strict=True
            )
        ]
    alpha = np.array([answer.alpha[name] for name in names]) if answer.alpha else None
    top = [(str(text), score) for text, score in answer.top]
    if answer.output is not None:
        top = [(f"{answer.answer} (raw {answer.output:.2f})", answer.output)]
    return AnswerView(
        question=question,
        words=answer.words,
        top=top,
        attention=answer.attention,
        alpha=alpha,
        attention_names=names,
        frames=frames,
        boxes=None if record.boxes is None else record.boxes[chosen],
        frame_times=None if record.frame_times is None else record.frame_times[chosen],
        labels=labels,
        note=note,
    )


def answer_video(settings: AnswerSettings) -> dict[str, Any]:
    """``masn answer``: extracts the video, answers the question with the checkpoint's model and
    draws the figure (default ``<video stem>.answer.png`` here); returns a JSON-ready summary.

    Everything that can be checked without the video (checkpoint, question, candidates, feature
    widths, weights) is checked before the slow extraction starts.
    """
    video, question, out = Path(settings.video), settings.question, settings.out
    candidates = list(settings.candidates) if settings.candidates else None
    if not video.is_file():
        raise MissingInput(f"no video at {video}")
    predictor = load_predictor(settings.checkpoint)
    check_question(predictor, question, candidates)
    check_widths(predictor.model.config, **EXTRACTED_WIDTHS, origin="masn extract")
    config, random_weights = settings.features, settings.random_weights
    extractor = Extractor.load(
        settings.weights,
        random_weights=random_weights,
        seed=settings.seed,
        device=settings.device,
        config=config,
        decoder=settings.decoder,
    )
    where = extractor.device
    record = extractor.extract(video)
    del extractor  # frees the device for the model
    answer = answer_record(predictor, record, question, candidates, where)
    frames = frames_at(record.path, record.frame_times[answer.chosen], config.fps, settings.decoder)
    names = predictor.model.config.fusion_attentions
    note = RANDOM_NOTE if random_weights else ""
    view = answer_view(question, answer, names, record, frames, note)
    figure = draw_answer(view, out if out is not None else Path.cwd() / f"{video.stem}.answer.png")
    result: dict[str, Any] = {
        "video": str(video),
        "question": question,
        "answer": answer.answer,
        "top": [[text, score] for text, score in answer.top],
        "alpha": {name: round(value, DIGITS) for name, value in answer.alpha.items()},
        "figure": str(figure),
        "random_weights": random_weights,
        "sampled_frames": int(record.appearance.shape[0]),
        "frames_used": len(answer.chosen),
    }
    if answer.output is not None:
        result["count_output"] = round(answer.output, DIGITS)
    if candidates:
        result["candidates"] = list(candidates)
    if answer.unknown:
        result["unknown_words"] = list(answer.unknown)
    return result
