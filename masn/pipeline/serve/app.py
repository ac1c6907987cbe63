"""The web app of `masn serve`: Starlette routes rendering Jinja2 templates.

Every page's state is in its URL (or its posted form), so pages can be bookmarked and shared,
the back button works, and any number of browsers use the app at once without seeing each
other. A mistake in what a page was given (an unknown video key, an empty question, a file
that is not a video, runs on different questions, a store replaced by a damaged file) is a
message on the page with the status that fits, and the server goes on serving; anything else
is a bug, logged with its traceback and shown as such.

Client-given names are looked up, never used as paths: a video key is found in the store (and
only the file the store records for it is served), a run is its position in ``--run``, and an
upload is written under a fresh temporary folder that is deleted when the request ends.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from masn import __version__
from masn.errors import InvalidInput, MissingInput, UnknownName, UserError
from masn.extract.video.decode import DecodeError, probe
from masn.pipeline.serve.catalogue import Catalogue, sampled_frames
from masn.pipeline.serve.runs import CORRECTNESS, SORTS, Run, compare, paged
from masn.pipeline.serve.settings import ServeSettings
from masn.pipeline.serve.uploads import MB, UploadTooLarge, read_form

if TYPE_CHECKING:
    from masn.pipeline.serve.asking import Asker

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
MAX_QUESTION = 500  # characters: questions are a sentence (the model reads at most 20 words)
MAX_CANDIDATES = 20
BOX_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)


@dataclass
class Served:
    """What the app serves: the store, the runs, the models and where uploads go."""

    settings: ServeSettings
    catalogue: Catalogue
    runs: list[Run]
    uploads: Path
    question_threads: int | None = None
    _asker: Asker | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def asker(self) -> Asker:
        """The models and the upload extractor, imported on the first question (torch takes
        seconds to import: the other pages do not wait for it)."""
        with self._lock:
            if self._asker is None:
                from masn.pipeline.serve.asking import Asker

                settings = self.settings
                self._asker = Asker(
                    self.catalogue,
                    settings.weights,
                    settings.device,
                    settings.decoder,
                    self.question_threads,
                )
            return self._asker

    def warm(self) -> None:
        """Imports the answering code and loads every run's model, so that the first question
        does not wait for them (a model that fails to load says why when it is asked)."""
        for run in self.runs:
            if run.checkpoint is not None:
                try:
                    self.asker().model(run)
                except Exception as error:  # reported again, with its page, when it is asked
                    log.warning("run %s: its model did not load: %s", run.name, error)

    def run(self, value: str | None, default: int | None = 0) -> Run | None:
        """The run a client names by its position in --run."""
        if value in (None, ""):
            return self.runs[default] if default is not None and self.runs else None
        try:
            index = int(value)
        except ValueError:
            index = -1
        if not 0 <= index < len(self.runs):
            known = ", ".join(f"{run.index} ({run.name})" for run in self.runs) or "none"
            raise UnknownName(f"no run {value!r}; the runs are: {known}")
        return self.runs[index]


def check_text(question: str, candidates: Sequence[str]) -> tuple[str, list[str]]:
    """The question and the candidates stripped; refuses empty and overlong ones."""
    question = question.strip()
    if not question:
        raise InvalidInput("the question is empty: type a question about the video")
    if len(question) > MAX_QUESTION:
        raise InvalidInput(
            f"the question is {len(question):,} characters long; ask in at most {MAX_QUESTION} "
            "(the model reads the first 20 words)"
        )
    chosen = [c.strip() for c in candidates if c.strip()]
    if len(chosen) > MAX_CANDIDATES:
        raise InvalidInput(f"{len(chosen)} candidates: give at most {MAX_CANDIDATES}")
    if any(len(c) > MAX_QUESTION for c in chosen):
        raise InvalidInput(f"a candidate answer is longer than {MAX_QUESTION} characters")
    return question, chosen


def _number(value: str | None, default: int, name: str) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, got {value[:40]!r}") from None


def _seconds(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "?"
    return f"{value:.2f} s"


def _score(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def url(path: str, **params: Any) -> str:
    """``path`` with the non-empty ``params`` as its query (sequences repeat the name)."""
    items = {name: value for name, value in params.items() if value not in (None, "", (), [])}
    return f"{path}?{urlencode(items, doseq=True)}" if items else path


def templates() -> Jinja2Templates:
    """The page templates with the app's filters."""
    pages = Jinja2Templates(directory=str(TEMPLATES))
    pages.env.filters.update(seconds=_seconds, score=_score)
    pages.env.globals.update(version=__version__, box_colours=BOX_COLOURS, url=url)
    return pages


def create_app(settings: ServeSettings, question_threads: int | None = None) -> Starlette:
    """The app for ``settings``; a missing or damaged store or run is refused here.

    ``question_threads``: torch's CPU threads while questions are answered (None: as torch
    has them). masn serve answers on one: questions run concurrently, one per request thread,
    and MASN answers in tens of milliseconds on one thread, while several threads per question
    compete for the cores (measured on 2 busy cores: 18 ms on one thread, up to 1.7 s on two).
    """
    catalogue = Catalogue(settings.store, settings.decoder)
    runs = [Run(i, path, settings.annotations) for i, path in enumerate(settings.run)]
    uploads = Path(tempfile.mkdtemp(prefix="masn-serve-uploads-"))
    served = Served(settings, catalogue, runs, uploads, question_threads)
    pages = templates()

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        random_store = False
        with contextlib.suppress(UserError):
            random_store = catalogue.random_networks()
        context.update(
            served=served,
            runs=runs,
            notice=catalogue.notice,
            random_store=random_store,
            store_path=settings.store,
        )
        return pages.TemplateResponse(request, name, context, status_code=status)

    async def user_error(request: Request, error: Exception) -> Response:
        if isinstance(error, UploadTooLarge):
            status = 413
        elif isinstance(error, (UnknownName, MissingInput)):
            status = 404
        else:
            status = 400
        return render(request, "message.html", status, message=str(error), page="")

    async def bug(request: Request, error: Exception) -> Response:
        log.error("error serving %s", request.url.path, exc_info=error)
        text = f"{type(error).__name__}: {error}"
        return render(request, "message.html", 500, message=text, bug=True, page="")

    def store_page(request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        number = _number(request.query_params.get("page"), 1, "page") - 1
        listing = catalogue.page(query, number, settings.page_size)
        provenance = catalogue.store().provenance
        return render(
            request,
            "store.html",
            page="store",
            query=query,
            listing=listing,
            provenance=provenance,
            dtype=catalogue.store().feature_dtype,
        )

    def video_page(request: Request) -> Response:
        key = request.query_params.get("key", "")
        detail = catalogue.detail(key)
        questions = []
        for run in runs:
            evaluation = run.evaluation()
            if evaluation is not None:
                questions += [(run, q) for q in evaluation.questions if q.video == key]
        return render(request, "video.html", page="store", detail=detail, questions=questions)

    def frame_image(request: Request) -> Response:
        key = request.query_params.get("key", "")
        index = _number(request.query_params.get("index"), 0, "index")
        image = catalogue.frame_jpeg(key, index)
        return Response(image, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    def video_file(request: Request) -> Response:
        key = request.query_params.get("key", "")
        record = catalogue.read(key, ())
        source = catalogue.source(record)
        if source is None:
            raise MissingInput(f"the video file of {key!r} is not reachable at {record.path!r}")
        return FileResponse(source, media_type=None)

    def ask_form(request: Request, values: dict[str, Any], status: int = 200, **extra: Any):
        askable = [run for run in runs if run.checkpoint is not None]
        return render(
            request,
            "ask.html",
            status,
            page="ask",
            askable=askable,
            values=values,
            upload_mb=settings.upload_mb,
            upload_seconds=settings.upload_seconds,
            **extra,
        )

    def ask_stored(run: Run, key: str, question: str, candidates: list[str]) -> dict[str, Any]:
        record = catalogue.read(key, None)
        answered = served.asker().ask(run, record, question, candidates)
        return {
            "answered": answered,
            "frames": sampled_frames(record, answered.answer.chosen),
            "images": [url("/media/frame", key=key, index=int(i)) for i in answered.answer.chosen],
            "size": (record.width, record.height),
            "video": key,
        }

    def ask_upload(
        run: Run, path: Path, name: str, question: str, candidates: list[str]
    ) -> dict[str, Any]:
        from masn.pipeline.serve.asking import upload_images

        asker = served.asker()
        asker.check(run, question, candidates)
        try:
            info = probe(path)
        except DecodeError as error:
            raise InvalidInput(f"{name!r} is not a video the decoder can read: {error}") from None
        if info.duration is not None and info.duration > settings.upload_seconds:
            raise InvalidInput(
                f"{name!r} lasts {info.duration:.0f} s; upload a clip of at most "
                f"{settings.upload_seconds:.0f} s (extraction takes seconds per sampled frame)"
            )
        record, frames, note = asker.extract(path)
        answered = asker.ask(run, record, question, candidates)
        answered.summary["video"] = name
        return {
            "answered": answered,
            "frames": sampled_frames(record, answered.answer.chosen),
            "images": upload_images(frames, answered.answer.chosen),
            "size": (record.width, record.height),
            "video": name,
            "note": note,
        }

    async def ask_page(request: Request) -> Response:
        if request.method == "GET":
            params = request.query_params
            values = {
                "run": params.get("run", ""),
                "key": params.get("key", ""),
                "question": params.get("question", ""),
                "candidates": "\n".join(params.getlist("candidates")),
            }
            if not (values["key"] and values["question"]):
                served.run(values["run"] or None)  # an unknown run is a message
                return ask_form(request, values)
            return await _answer(request, values, None, "")
        folder = Path(tempfile.mkdtemp(dir=uploads))
        try:
            form = await read_form(
                request.headers.get("content-type", ""),
                request.headers.get("content-length"),
                request.stream(),
                folder,
                settings.upload_mb * MB,
            )
            values = {
                "run": form.get("run"),
                "key": form.get("key"),
                "question": form.get("question"),
                "candidates": form.get("candidates"),
            }
            return await _answer(request, values, form.file, form.filename)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def _answer(
        request: Request, values: dict[str, Any], upload: Path | None, name: str
    ) -> Response:
        try:
            run = served.run(values["run"] or None)
            if run is None:
                raise InvalidInput("no run to ask: start masn serve with --run RUN")
            question, candidates = check_text(
                values["question"], str(values["candidates"]).splitlines()
            )
            if upload is not None:
                result = await run_in_threadpool(
                    ask_upload, run, upload, name, question, candidates
                )
            elif values["key"]:
                result = await run_in_threadpool(
                    ask_stored, run, values["key"].strip(), question, candidates
                )
            else:
                raise InvalidInput("choose a stored video (its key) or upload a video")
        except UserError as error:
            status = 413 if isinstance(error, UploadTooLarge) else 400
            if isinstance(error, UnknownName):
                status = 404
            return ask_form(request, values, status, error=str(error))
        return ask_form(request, values, run=run, **result)

    def results_page(request: Request) -> Response:
        params = request.query_params
        run = served.run(params.get("run"))
        filters = {
            "qtype": params.get("type", ""),
            "correct": params.get("correct", ""),
            "answer": params.get("answer", "").strip(),
            "predicted": params.get("predicted", "").strip(),
            "text": params.get("text", "").strip(),
            "sort": params.get("sort", "position"),
            "descending": params.get("order", "") == "desc",
        }
        number = _number(params.get("page"), 1, "page") - 1
        evaluation = run.evaluation() if run is not None else None
        table = paged(run.table(**filters) if run else [], number, settings.page_size)
        return render(
            request,
            "results.html",
            page="results",
            run=run,
            evaluation=evaluation,
            table=table,
            filters=filters,
            sorts=SORTS,
            correctness=CORRECTNESS,
            params=dict(params),
        )

    def compare_page(request: Request) -> Response:
        params = request.query_params
        chosen = params.getlist("runs")
        right = params.get("right", "")
        wrong = params.get("wrong", "")
        context: dict[str, Any] = {"chosen": chosen, "right": right, "wrong": wrong}
        if chosen:
            selected = [served.run(value) for value in dict.fromkeys(chosen)]
            try:
                comparison = compare(
                    selected,
                    _number(right, -1, "right") if right else None,
                    _number(wrong, -1, "wrong") if wrong else None,
                )
            except InvalidInput as error:
                return render(
                    request, "compare.html", 400, page="compare", error=str(error), **context
                )
            number = _number(params.get("page"), 1, "page") - 1
            context.update(
                comparison=comparison,
                table=paged(comparison.rows, number, settings.page_size),
            )
        return render(request, "compare.html", page="compare", **context)

    def home(request: Request) -> Response:
        return RedirectResponse("/store", status_code=307)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        shutil.rmtree(uploads, ignore_errors=True)

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/store", store_page),
            Route("/store/video", video_page),
            Route("/media/frame", frame_image),
            Route("/media/video", video_file),
            Route("/ask", ask_page, methods=["GET", "POST"]),
            Route("/results", results_page),
            Route("/compare", compare_page),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={UserError: user_error, Exception: bug},
        lifespan=lifespan,
    )
    app.state.served = served
    weakref.finalize(app, shutil.rmtree, uploads, ignore_errors=True)
    return app
