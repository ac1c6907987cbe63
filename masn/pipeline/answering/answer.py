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
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from masn.atomic import writable_folder
from masn.caller import option
from masn.errors import InvalidInput
from masn.extract.networks.feature_networks import feature_widths
from masn.extract.networks.vocab import attribute_names, object_names
from masn.extract.run.one_video import Extractor
from masn.extract.settings import ExtractionConfig
from masn.extract.show import frames_at
from masn.extract.store.schema import (
    FEATURE_FIELDS,
    RANDOM_WEIGHTS_NOTE,
    Provenance,
    VideoRecord,
)
from masn.extract.video.decode import check_video_file
from masn.model import MASNConfig, VideoFeatures
from masn.pipeline.answering.figure import AnswerView, draw_answer
from masn.pipeline.answering.settings import AnswerSettings
from masn.pipeline.qa.questions import candidate_texts, encode_question, pad_video
from masn.pipeline.qa.text import QUESTION_WIDTH, Tokeniser, tokeniser
from masn.pipeline.training.checkpoint import Predictor, checkpoint_file, load_predictor
from masn.pipeline.training.evaluate import top_answers
from masn.weights.cache import cache_dir

log = logging.getLogger(__name__)

DIGITS = 6  # decimals of the scores in the result
QUESTION_CHARS = 300  # the longest question text shown (in the figure, the result, the log)
RANDOM_NOTE = f"{RANDOM_WEIGHTS_NOTE}: features and answers are meaningless"
HEAD_NAMES = {
    "open_ended": "an open-ended",
    "count": "a count",
    "multiple_choice": "a multiple-choice",
}
SAME_FEATURES = (
    "extract the video as the model's training features were (same networks and settings)"
)
ANSWER_FIX = (
    "leave out the extraction flags, --weights and --random-weights: masn answer extracts like "
    "the model's training features by default"
)


@dataclass
class ModelAnswer:
    """The model's reading of one question on one video.

    answer: the answer text, the chosen candidate, or the rounded count. top: (answer, score),
    best first. alpha: fusion weight per attention (empty without a fusion module). attention:
    each fusion attention map (2L, 2L) of the answered question (the chosen candidate's for
    multiple choice). words: the question's tokens the model read (with the chosen candidate).
    chosen: the video's sampled frames the model read. output: the raw count (count head only).
    unknown: question words outside the vocabulary (read as UNK). question: the question as the
    model read it (cut to its first ``QUESTION_WIDTH`` words when longer).
    """

    answer: str | int
    top: list[tuple[str | int, float]]
    alpha: dict[str, float]
    attention: dict[str, np.ndarray]
    words: list[str]
    chosen: np.ndarray
    output: float | None = None
    unknown: tuple[str, ...] = ()
    question: str = ""


def check_question(predictor: Predictor, question: str, candidates: list[str] | None) -> None:
    """Refuses an empty question, and candidates missing (multiple choice) or unwanted (else)."""
    tokenise = tokeniser(predictor.tokenizer)
    if not tokenise(question):
        raise InvalidInput(f"the question {question!r} has no words")
    head = predictor.spec.head
    if head == "multiple_choice":
        if not candidates or len(candidates) < 2:
            example = option("candidates", ["answer one", "answer two", ...])
            raise InvalidInput(
                f"this checkpoint answers multiple-choice questions: pass at least two candidates, "
                f"e.g. {example}"
            )
        empty = [c for c in candidates if not tokenise(c)]
        if empty:
            raise InvalidInput(f"candidates without words: {empty}")
        if len(set(candidates)) != len(candidates):
            raise InvalidInput(f"the candidates repeat one another: {candidates}")
    elif candidates:
        raise InvalidInput(
            f"this checkpoint has {HEAD_NAMES[head]} head; {option('candidates')} are for "
            "multiple-choice models"
        )


def check_widths(config: MASNConfig, widths: dict[str, int], origin: str) -> None:
    """Refuses features whose widths differ from the model's (e.g. a model trained on CLIP
    features cannot read ResNet-152 ones)."""
    wanted = config.widths
    if wanted != widths:
        names = ", ".join(name.replace("_", " ") for name in wanted)
        raise InvalidInput(
            f"the model reads features of widths {' / '.join(map(str, wanted.values()))} "
            f"({names}), but {origin} gives "
            f"{' / '.join(str(widths.get(name)) for name in wanted)}: extract with the "
            f"networks the model was trained on ({option('appearance')}, {option('motion')}), "
            "or use another checkpoint"
        )


def check_features(
    trained: Provenance | None, given: Provenance | None, origin: str, fix: str = SAME_FEATURES
) -> None:
    """Refuses features made otherwise than the model's training features (``fix``: what to
    do), and warns where they differ only in random networks; silent where either side is
    unknown (e.g. official features).

    Other sizes, rates, networks or published weights give features the model never saw, so its
    answer would be meaningless: refused. Random networks on one side (or other seeds) only
    warn: random features serve smoke runs, whose answers mean nothing anyway and which the
    random-weights banner announces; refusing would block them. Numeric precision and storage
    dtype (``schema.NUMERICS``) change features by rounding only and are not compared.
    """
    if trained is None or given is None:
        return
    found = given.differences(trained)
    other = [*found.settings, *found.networks]
    if other:
        raise InvalidInput(
            f"{origin} were made otherwise than the model's training features "
            f"({'; '.join(other)}): {fix}"
        )
    if found.random:
        log.warning(
            "%s come from other networks than the model's training features (%s): the answer "
            "means nothing",
            origin,
            "; ".join(found.random),
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
    fix: str | None = SAME_FEATURES,
) -> ModelAnswer:
    """Asks the model ``question`` about the extracted video ``record``. Features made otherwise
    than the model's training features are refused or warned about (:func:`check_features`;
    ``fix``: what to do instead, None where they were checked before extraction)."""
    check_question(predictor, question, candidates)
    widths = {name: int(getattr(record, name).shape[-1]) for name in FEATURE_FIELDS}
    origin = f"the features of {record.key!r}"
    check_widths(predictor.model.config, widths, origin)
    if fix is not None:
        check_features(predictor.features, record.provenance, origin, fix)
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
    question = model_question(question, tokenise)
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
        question=question,
    )


def model_question(question: str, tokenise: Tokeniser) -> str:
    """``question`` as the model reads it: a question longer than the model's ``QUESTION_WIDTH``
    words is cut to its first ones (their tokens, joined), with one warning; the text is also
    cut to ``QUESTION_CHARS`` (a single endless word), so that the figure, the result and the
    log stay readable."""
    words = tokenise(question)
    if len(words) <= QUESTION_WIDTH and len(question) <= QUESTION_CHARS:
        return question
    text = " ".join(words[:QUESTION_WIDTH])
    if len(text) > QUESTION_CHARS:
        text = text[: QUESTION_CHARS - 1] + "…"
    if len(words) > QUESTION_WIDTH:
        log.warning(
            "the question has %d words; the model reads its first %d, the rest is left out: %r",
            len(words),
            QUESTION_WIDTH,
            text,
        )
    return text


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
        question=answer.question or question,
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


def figure_path(settings: AnswerSettings) -> Path:
    """Where ``masn answer`` draws its figure: ``--out``, else the run folder of the checkpoint
    (``RUN/answers/<video stem>.answer.png``), never the current folder."""
    if settings.out is not None:
        return Path(settings.out)
    run = checkpoint_file(settings.checkpoint).parent
    return run / "answers" / f"{Path(settings.video).stem}.answer.png"


def resolved_settings(
    settings: AnswerSettings, predictor: Predictor | None = None
) -> AnswerSettings:
    """``settings`` with the defaults ``masn answer`` decides (``--print-config`` shows them): the
    figure beside the checkpoint, and the extraction settings and networks of the model's
    training features where no flag chose others (extraction flags that differ from the
    defaults, --weights, --random-weights); the installed weights of the cache otherwise.
    ``predictor``: the checkpoint's model, when loaded already."""
    predictor = load_predictor(settings.checkpoint) if predictor is None else predictor
    trained = predictor.features
    changes: dict[str, Any] = {"out": figure_path(settings)}
    if trained is not None and settings.features == ExtractionConfig():
        changes["features"] = trained.extraction_config()
    chosen = settings.weights is not None or settings.random_weights
    seed = None if trained is None else trained.random_seed()
    if not chosen and seed is not None:
        changes |= {"random_weights": True, "seed": seed}
    elif not settings.random_weights and settings.weights is None:
        changes["weights"] = cache_dir()
    return replace(settings, **changes)


def answer_extractor(settings: AnswerSettings, predictor: Predictor) -> Extractor:
    """The networks ``masn answer`` extracts with (:func:`resolved_settings`). Features made
    otherwise than the model's training features are refused or warned about here
    (:func:`check_features`), before the slow extraction."""
    trained, decided = predictor.features, resolved_settings(settings, predictor)
    check_widths(
        predictor.model.config, feature_widths(decided.features), "the extraction networks"
    )
    if trained is None or settings.weights is not None or settings.random_weights:
        extractor = Extractor.load(
            settings.weights,
            random_weights=settings.random_weights,
            seed=settings.seed,
            device=settings.device,
            config=decided.features,
            decoder=settings.decoder,
        )
    else:  # like the training features: their random networks, or the installed weights
        extractor = Extractor.like(
            trained, device=settings.device, decoder=settings.decoder, config=decided.features
        )
    check_features(trained, extractor.provenance, "the features asked for", ANSWER_FIX)
    return extractor


def answer_summary(
    answer: ModelAnswer, video: str, record: VideoRecord, candidates: list[str] | None
) -> dict[str, Any]:
    """The JSON of one answer as `masn answer` prints it, less its figure and weights fields
    (the web app shows the same)."""
    summary: dict[str, Any] = {
        "video": video,
        "question": answer.question,
        "answer": answer.answer,
        "top": [[text, score] for text, score in answer.top],
        "alpha": {name: round(value, DIGITS) for name, value in answer.alpha.items()},
        "sampled_frames": int(record.appearance.shape[0]) if record.appearance is not None else 0,
        "frames_used": len(answer.chosen),
    }
    if answer.output is not None:
        summary["count_output"] = round(answer.output, DIGITS)
    if candidates:
        summary["candidates"] = list(candidates)
    if answer.unknown:
        summary["unknown_words"] = list(answer.unknown)
    return summary


def answer_video(
    settings: AnswerSettings, show: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """``masn answer``: extracts the video, answers the question with the checkpoint's model and
    draws the figure (:func:`figure_path`); returns a JSON-ready summary.

    Everything that can be checked without the video (checkpoint, question, candidates, feature
    widths, weights, the figure's folder) is checked before the slow extraction starts. ``show``
    gets the summary before the figure is drawn, so that a figure that cannot be written (a
    full disk) loses no answer.
    """
    video, question, out = Path(settings.video), settings.question, figure_path(settings)
    candidates = list(settings.candidates) if settings.candidates else None
    check_video_file(video)
    predictor = load_predictor(settings.checkpoint)
    check_question(predictor, question, candidates)
    writable_folder(out.parent, "masn answer cannot write its figure", "choose a writable --out")
    extractor = answer_extractor(settings, predictor)
    where, config = extractor.device, extractor.config
    random_weights = extractor.provenance.random_seed() is not None
    record = extractor.extract(video)
    del extractor  # frees the device for the model
    answer = answer_record(predictor, record, question, candidates, where, fix=None)
    result = answer_summary(answer, str(video), record, candidates)
    result.update(figure=str(out), random_weights=random_weights)
    if show is not None:
        show(result)
    frames = frames_at(record.path, record.frame_times[answer.chosen], config.fps, settings.decoder)
    names = predictor.model.config.fusion_attentions
    note = RANDOM_NOTE if random_weights else ""
    draw_answer(answer_view(question, answer, names, record, frames, note), out)
    return result
