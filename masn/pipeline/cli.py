"""The `masn` command line: one entry point, one subcommand per job.

Each subcommand imports its machinery only when it runs, so `masn --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from masn.errors import InvalidInput, UserError


def _extract(args: argparse.Namespace) -> int:
    from masn.extract.run.collection import run_extraction
    from masn.extract.settings import DetectorConfig, ExtractionConfig, RunOptions
    from masn.extract.store.merge import merge_stores
    from masn.runtime import default_workers
    from masn.weights.cache import cache_dir

    if args.merge:
        merge_stores(args.merge, args.out)
        return 0
    if args.videos is None:
        raise InvalidInput("masn extract: --videos DIR is required (or --merge SHARD ...)")
    sizes = {"min_size": args.min_size, "max_size": args.max_size, "post_nms_top_n": args.proposals}
    detector = DetectorConfig(**{name: value for name, value in sizes.items() if value is not None})
    config = ExtractionConfig(
        i3d=args.i3d,
        detector=detector,
        precision=args.precision,
        feature_dtype=args.feature_dtype,
    )
    workers = args.workers if args.workers is not None else default_workers()
    options = RunOptions(
        args.device, args.batch_size, workers, args.decoder, retry_failed=args.retry_failed
    )
    weights = args.weights if args.weights is not None else cache_dir()
    return run_extraction(
        args.videos,
        args.dataset,
        args.out,
        config,
        options,
        weights,
        args.random_weights,
        args.mapping,
    )


def _add_extract(commands: argparse._SubParsersAction) -> None:
    extract = commands.add_parser(
        "extract",
        help="raw videos -> MASN features (HDF5 store); torchrun for several GPUs",
        description="Extract detector, ResNet-152 and I3D features of every video under "
        "--videos into --out. Reruns skip stored videos; undecodable videos are recorded in "
        "OUT.failures.jsonl. Under torchrun each rank writes a shard and rank 0 merges them.",
    )
    extract.add_argument("--videos", type=Path, help="folder of videos")
    extract.add_argument(
        "--dataset",
        choices=["folder", "msvd", "msrvtt", "tgif"],
        default="folder",
        help="file naming -> video keys (folder: relative paths)",
    )
    extract.add_argument("--out", type=Path, required=True, help="feature store (.h5)")
    source = extract.add_mutually_exclusive_group()
    source.add_argument(
        "--weights", type=Path, help="converted weights (default: the weights cache; make weights)"
    )
    source.add_argument(
        "--random-weights", action="store_true", help="random networks, for smoke runs only"
    )
    extract.add_argument("--mapping", type=Path, help="MSVD youtube_mapping.txt (default: bundled)")
    extract.add_argument("--decoder", choices=["pyav", "decord"], default="pyav")
    extract.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    extract.add_argument("--batch-size", type=int, default=8, help="sampled frames per batch")
    extract.add_argument("--workers", type=int, help="decode processes (default: from CPU count)")
    extract.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    extract.add_argument("--i3d", choices=["nonlocal", "pytorchvideo"], default="nonlocal")
    extract.add_argument("--feature-dtype", choices=["float16", "float32"], default="float16")
    smoke = "; smaller values only for quick smoke runs"
    extract.add_argument("--min-size", type=int, help=f"detector short side (600{smoke})")
    extract.add_argument("--max-size", type=int, help=f"detector long-side cap (1000{smoke})")
    extract.add_argument("--proposals", type=int, help=f"RPN proposals kept (300{smoke})")
    extract.add_argument(
        "--merge", type=Path, nargs="+", metavar="SHARD", help="only join shard stores into --out"
    )
    extract.add_argument(
        "--retry-failed",
        action="store_true",
        help="also retry videos that already failed twice (see OUT.failures.jsonl)",
    )
    extract.set_defaults(run=_extract)


def _weights_fetch(args: argparse.Namespace) -> int:
    from masn.weights.commands import fetch_command

    return fetch_command(args.names, args.cache, args.force)


def _weights_list(args: argparse.Namespace) -> int:
    from masn.weights.commands import list_command

    return list_command(args.cache)


def _add_weights(commands: argparse._SubParsersAction) -> None:
    weights = commands.add_parser("weights", help="published weights: download, verify, convert")
    actions = weights.add_subparsers(dest="action", metavar="ACTION", required=True)
    cache_help = (
        "cache folder (default: $MASN_WEIGHTS_DIR, else $XDG_CACHE_HOME/masn, else ~/.cache/masn)"
    )
    fetch = actions.add_parser(
        "fetch", help="download (resumable), verify and convert; default: the paper's set"
    )
    fetch.add_argument("names", nargs="*", help="manifest names (see `masn weights list`)")
    fetch.add_argument("--force", action="store_true", help="download again even if present")
    fetch.add_argument("--cache", type=Path, help=cache_help)
    fetch.set_defaults(run=_weights_fetch)
    listing = actions.add_parser("list", help="every known file and whether it is verified")
    listing.add_argument("--cache", type=Path, help=cache_help)
    listing.set_defaults(run=_weights_list)


def _features(args: argparse.Namespace) -> int:
    from masn.extract.store.official_transfer import export_official, import_official, read_key_map

    key_map = read_key_map(args.key_map) if args.key_map else None
    if args.action == "export-official":
        export_official(args.store, args.folder, args.dataset, key_map)
    else:
        import_official(args.folder, args.dataset, args.store, key_map, args.skip_incomplete)
    return 0


def _add_features(commands: argparse._SubParsersAction) -> None:
    features = commands.add_parser(
        "features", help="convert between our feature store and the official MASN files"
    )
    actions = features.add_subparsers(dest="action", metavar="ACTION", required=True)
    key_help = (
        "our key -> official key: a TGIF-QA question file (gif_name -> key) or a two-column TSV"
    )
    export = actions.add_parser("export-official", help="store -> the four official HDF5 files")
    export.add_argument("store", type=Path)
    export.add_argument("folder", type=Path, help="where to write the four files")
    imported = actions.add_parser(
        "import-official", help="the four official HDF5 files (e.g. the authors') -> a store"
    )
    imported.add_argument("folder", type=Path, help="folder holding the four files")
    imported.add_argument("store", type=Path)
    imported.add_argument(
        "--skip-incomplete", action="store_true", help="drop videos missing from some files"
    )
    for action in (export, imported):
        action.add_argument("--dataset", choices=["tgif", "msvd", "msrvtt"], required=True)
        action.add_argument("--key-map", type=Path, help=key_help)
        action.set_defaults(run=_features)


def _train(args: argparse.Namespace) -> int:
    from masn.pipeline.training.settings import TrainSettings
    from masn.pipeline.training.trainer import train

    values = {k: v for k, v in vars(args).items() if k in TrainSettings.__dataclass_fields__}
    report = train(TrainSettings(**values))
    print(json.dumps(report, indent=2))
    return 0


def _add_train(commands: argparse._SubParsersAction) -> None:
    from masn.pipeline.qa.tasks import TASKS

    train = commands.add_parser(
        "train",
        help="train MASN on a task (torchrun for several GPUs)",
        description="Train on TASK's annotations and features; the run folder gets best.pt, "
        "last.pt (resumable), metrics.jsonl, tensorboard/ and report.json. Defaults reproduce "
        "the paper (Adam 1e-4, batch 32 / 16 for Action and Transition, T 20 / 30).",
    )
    train.add_argument("--task", choices=list(TASKS), required=True)
    train.add_argument("--annotations", help="folder of QA files (default data/<dataset>)")
    train.add_argument(
        "--features", help="feature store .h5, or a folder of the official four files"
    )
    train.add_argument("--out", help="run folder (default runs/<task>)")
    train.add_argument(
        "--glove",
        help="GloVe .txt/.zip (default: the weights cache's glove.42B.300d.zip); "
        "'random' for seeded random vectors (smoke runs)",
    )
    train.add_argument(
        "--head",
        choices=["open_ended", "count", "multiple_choice"],
        help="custom collections: the answer type (default: from the rows: candidates -> "
        "multiple choice, integer answers -> count, else open-ended)",
    )
    train.add_argument("--mode", choices=["fixed", "reference"], default="fixed")
    train.add_argument("--tokenizer", choices=["clean", "official"])
    train.add_argument("--frames", type=int, help="T: sampled frames per video")
    train.add_argument(
        "--sampling",
        choices=["first", "uniform"],
        default="first",
        help="longer videos: the first T sampled frames (official) or T evenly",
    )
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float, default=1e-4)
    train.add_argument("--epochs", type=int, default=100)
    train.add_argument("--patience", type=int, default=10, help="epochs without improvement")
    train.add_argument(
        "--select-on",
        choices=["val", "test"],
        default="val",
        help="model selection split; 'test' mimics the paper",
    )
    train.add_argument("--val-fraction", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=999)
    train.add_argument(
        "--out-of-set",
        choices=["wrong", "reference"],
        default="wrong",
        help="open-ended answers outside the classes: dropped from training and "
        "wrong in evaluation, or class 1 as in the official code",
    )
    train.add_argument(
        "--answers-top", type=int, help="answer classes (default 1000 MSVD, 4000 MSRVTT)"
    )
    train.add_argument("--hidden", type=int, default=512)
    train.add_argument("--dropout", type=float, default=0.3)
    train.add_argument("--streams", choices=["both", "appearance", "motion"], default="both")
    train.add_argument("--fusion", choices=["full", "dual", "single", "none"], default="full")
    train.add_argument("--workers", type=int, help="data loading processes")
    train.add_argument("--device", default="auto")
    train.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 on GPUs")
    train.add_argument("--save-every", type=int, default=0, help="steps between checkpoints")
    train.add_argument("--log-every", type=int, default=50)
    train.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the answer-only baseline (multiple choice)",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.set_defaults(run=_train)


def _evaluate(args: argparse.Namespace) -> int:
    from masn.pipeline.training.evaluate import run_evaluate
    from masn.runtime import resolve_device

    report = run_evaluate(
        args.checkpoint,
        args.annotations,
        args.features,
        args.split,
        args.out,
        resolve_device(args.device),
        args.batch_size,
        args.workers,
        args.precision or "fp32",
        args.baseline,
    )
    print(json.dumps(report, indent=2))
    return 0


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="metrics of a checkpoint on a split, per question type, with predictions",
        description="Writes metrics.json and predictions.jsonl (default: beside the "
        "checkpoint, in evaluate-SPLIT/). Annotations and features default to the training run's.",
    )
    evaluate.add_argument("--checkpoint", required=True, help="RUN/best.pt")
    evaluate.add_argument("--split", choices=["train", "val", "test"], default="test")
    evaluate.add_argument("--annotations")
    evaluate.add_argument("--features")
    evaluate.add_argument("--out", help="output folder")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--batch-size", type=int)
    evaluate.add_argument("--workers", type=int, default=2)
    evaluate.add_argument("--precision", choices=["fp32", "bf16"])
    evaluate.add_argument("--no-baseline", dest="baseline", action="store_false")
    evaluate.set_defaults(run=_evaluate)


def _answer(args: argparse.Namespace) -> int:
    from masn.extract.settings import DetectorConfig, ExtractionConfig
    from masn.pipeline.answering.answer import answer_video

    sizes = {"min_size": args.min_size, "max_size": args.max_size, "post_nms_top_n": args.proposals}
    detector = DetectorConfig(**{name: value for name, value in sizes.items() if value is not None})
    result = answer_video(
        args.video,
        args.question,
        args.checkpoint,
        args.out,
        weights=args.weights,
        random_weights=args.random_weights,
        device=args.device,
        candidates=args.candidates,
        extraction=ExtractionConfig(i3d=args.i3d, detector=detector),
        decoder=args.decoder,
    )
    print(json.dumps(result, indent=2))
    logging.getLogger("masn").info("figure written to %s", result["figure"])
    return 0


def _add_answer(commands: argparse._SubParsersAction) -> None:
    answer = commands.add_parser(
        "answer",
        help="ask a trained model a question about one video; prints answers, draws attention",
        description="Extracts the video's features on the fly, answers QUESTION with the "
        "checkpoint's model, prints the top-5 answers with their scores as JSON and draws the "
        "fusion attention maps, alpha and the sampled frames (like Figure 3 of the paper).",
    )
    answer.add_argument("video", type=Path, help="video file")
    answer.add_argument("question", help='the question, e.g. "what is the man doing?"')
    answer.add_argument("--checkpoint", type=Path, required=True, help="RUN/best.pt")
    answer.add_argument("--out", type=Path, help="figure PNG (default: ./<video stem>.answer.png)")
    answer.add_argument(
        "--candidates", nargs="+", metavar="ANSWER", help="multiple-choice models: the candidates"
    )
    source = answer.add_mutually_exclusive_group()
    source.add_argument(
        "--weights", type=Path, help="converted weights (default: the weights cache; make weights)"
    )
    source.add_argument(
        "--random-weights", action="store_true", help="random networks, for smoke runs only"
    )
    answer.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    answer.add_argument("--decoder", choices=["pyav", "decord"], default="pyav")
    answer.add_argument("--i3d", choices=["nonlocal", "pytorchvideo"], default="nonlocal")
    smoke = "; use the training features' value, smaller only for smoke runs"
    answer.add_argument("--min-size", type=int, help=f"detector short side (600{smoke})")
    answer.add_argument("--max-size", type=int, help=f"detector long-side cap (1000{smoke})")
    answer.add_argument("--proposals", type=int, help=f"RPN proposals kept (300{smoke})")
    answer.set_defaults(run=_answer)


def _demo(args: argparse.Namespace) -> int:
    from masn.pipeline.examples.demo import DemoSettings, outline, run_demo

    settings = DemoSettings(out=args.out, device=args.device, epochs=args.epochs, quick=args.quick)
    print(outline(run_demo(settings)))
    return 0


def _add_demo(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="the whole pipeline on the bundled sample: extract, train, evaluate, answer",
        description="Renders the sample clips, extracts features of them and of two real videos, "
        "trains MASN on open-ended, count and multiple-choice questions, evaluates, and answers a "
        "question about Big Buck Bunny with its attention figure. Uses the published weights when "
        "`make weights` has installed them, random networks (said loudly) otherwise.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo"), help="output folder")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--epochs", type=int, default=10)
    demo.add_argument("--quick", action="store_true", help="tiny settings (the test suite's)")
    demo.set_defaults(run=_demo)


def _synergy(args: argparse.Namespace) -> int:
    from masn.pipeline.examples.synergy import (
        SynergySettings,
        SynergyShape,
        format_table,
        run_synergy,
    )

    shape = SynergyShape() if args.videos is None else SynergyShape(videos=args.videos)
    epochs = {} if args.epochs is None else {"epochs": args.epochs}
    result = run_synergy(args.out, args.seed, shape, SynergySettings(**epochs, device=args.device))
    print(json.dumps(result, indent=2))
    print(format_table(result))
    return 0


def _add_synergy(commands: argparse._SubParsersAction) -> None:
    synergy = commands.add_parser(
        "synergy",
        help="synthetic check: appearance-only, motion-only and full MASN on stream-specific "
        "questions",
        description="Plants each video's colour only in appearance features and its direction "
        "only in motion features, asks one question of each kind per video, trains "
        "appearance-only, motion-only and full MASN alike, and prints their test accuracy per "
        "question type and full MASN's mean fusion alpha per question type (JSON, then a table).",
    )
    synergy.add_argument(
        "--out", type=Path, help="folder for data, runs and synergy.json (default: temporary)"
    )
    synergy.add_argument("--seed", type=int, default=0, help="data and training seed")
    synergy.add_argument("--epochs", type=int, help="training epochs per model (default 6)")
    synergy.add_argument(
        "--device", default="cpu", help="cpu (default: the task is tiny), auto, cuda"
    )
    synergy.add_argument(
        "--videos", type=int, help="videos, 60/10/30 %% train/val/test (default 240)"
    )
    synergy.set_defaults(run=_synergy)


def _show(args: argparse.Namespace) -> int:
    from masn.extract.show import show

    show(args.video, args.store, args.out, args.decoder)
    return 0


def _add_show(commands: argparse._SubParsersAction) -> None:
    show = commands.add_parser(
        "show", help="draw a video's sampled frames with boxes, labels and attributes"
    )
    show.add_argument("video", help="video key in the store, or the video's path")
    show.add_argument("--store", type=Path, required=True)
    show.add_argument("--out", type=Path, required=True, help="PNG to write")
    show.add_argument("--decoder", choices=["pyav", "decord"], default="pyav")
    show.set_defaults(run=_show)


def _bench_model(args: argparse.Namespace) -> int:
    from masn.pipeline.benchmarks.model_step import run_model_bench

    report = run_model_bench(
        device=args.device,
        size=args.size,
        precision=args.precision,
        steps=args.steps,
        warmup=args.warmup,
        mode=args.mode,
        cases=tuple(args.cases),
    )
    print(json.dumps(report, indent=2))
    return 0


def _bench_train(args: argparse.Namespace) -> int:
    from masn.pipeline.benchmarks.training_loop import run_train_bench

    report = run_train_bench(
        device=args.device,
        size=args.size,
        precision=args.precision,
        steps=args.steps,
        warmup=args.warmup,
        workers=args.workers,
        videos=args.videos,
        cases=tuple(args.cases),
        cold=args.cold,
        folder=args.dir,
    )
    print(json.dumps(report, indent=2))
    return 0


def _bench_extract(args: argparse.Namespace) -> int:
    from masn.extract.bench import run_extract_bench

    report = run_extract_bench(
        args.device, args.size, args.batch_size, args.workers, args.precision
    )
    print(json.dumps(report, indent=2))
    return 0


def _bench_memory(args: argparse.Namespace) -> int:
    from masn.extract.bench import run_memory_bench

    report = run_memory_bench(minutes=tuple(args.minutes))
    print(json.dumps(report, indent=2))
    return 0 if report["bounded"] else 1


def _add_bench(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="benchmarks that print JSON")
    benches = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    model = benches.add_parser(
        "model",
        help="training-step samples/s and peak memory (FrameQA 32, Count 32, Action 16)",
    )
    model.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1")
    model.add_argument(
        "--size",
        choices=["tgif", "small"],
        help="tgif: T=20, 10 objects, 2048-d (default on GPU); small: reduced (default on CPU)",
    )
    model.add_argument(
        "--precision", choices=["fp32", "bf16"], help="default: bf16 autocast on GPU, fp32 on CPU"
    )
    model.add_argument("--mode", choices=["fixed", "reference"], default="fixed")
    model.add_argument("--steps", type=int, default=10, help="timed training steps per case")
    model.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    model.add_argument(
        "--cases",
        nargs="+",
        choices=["frameqa", "count", "action"],
        default=["frameqa", "count", "action"],
    )
    model.set_defaults(run=_bench_model)

    training = benches.add_parser(
        "train",
        help="end-to-end training samples/s from a feature store on disk (FrameQA 32, Action 16)",
        description="Writes a synthetic float16 store to a temporary folder and times the "
        "`masn train` loop on it: loader workers, pinned copies and the training step "
        "(validation left out).",
    )
    training.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:1")
    training.add_argument(
        "--size",
        choices=["tgif", "small"],
        help="tgif: T=20, 10 objects, 2048-d (default on GPU); small: reduced (default on CPU)",
    )
    training.add_argument(
        "--precision", choices=["fp32", "bf16"], help="default: bf16 autocast on GPU, fp32 on CPU"
    )
    training.add_argument("--steps", type=int, help="timed steps per case (300 GPU, 10 CPU)")
    training.add_argument("--warmup", type=int, help="untimed steps first (30 GPU, 2 CPU)")
    training.add_argument("--workers", type=int, help="loader workers (default: as masn train)")
    training.add_argument(
        "--videos", type=int, help="videos in the store, 70 %% train (1024 GPU, 128 CPU)"
    )
    training.add_argument(
        "--cases", nargs="+", choices=["frameqa", "count", "action"], default=["frameqa", "action"]
    )
    training.add_argument(
        "--cold", action="store_true", help="evict the store from the page cache before timing"
    )
    training.add_argument("--dir", type=Path, help="where the temporary store goes (default TMP)")
    training.set_defaults(run=_bench_train)

    extraction = benches.add_parser(
        "extract", help="extraction sampled frames/s end to end and for the detector alone"
    )
    extraction.add_argument("--device", default="auto")
    extraction.add_argument(
        "--size", choices=["full", "small"], help="full: Caffe sizes (GPU default); small: CPU"
    )
    extraction.add_argument("--batch-size", type=int, default=8)
    extraction.add_argument("--workers", type=int, default=2)
    extraction.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 on GPU")
    extraction.set_defaults(run=_bench_extract)

    memory = benches.add_parser(
        "memory",
        help="extraction peak RSS (process tree) for a 1-minute and a 30-minute video",
        description="Extracts generated low-res videos with stand-in networks of the real output "
        "shapes and reports the peak memory of the whole process tree; exit 1 if the longest "
        "video needs more than 1.2 x the shortest.",
    )
    memory.add_argument("--minutes", type=float, nargs="+", default=[1.0, 30.0])
    memory.set_defaults(run=_bench_memory)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="masn",
        description="MASN video question answering: features, training, evaluation, answers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo(commands)
    _add_extract(commands)
    _add_train(commands)
    _add_evaluate(commands)
    _add_answer(commands)
    _add_show(commands)
    _add_features(commands)
    _add_weights(commands)
    _add_bench(commands)
    _add_synergy(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.run(args)
    except UserError as error:
        # A user mistake: its message says what to do; -v shows where it came from. Any other
        # exception is a bug and keeps its traceback.
        logging.getLogger("masn").error("%s", error, exc_info=args.verbose)
        return 2


if __name__ == "__main__":
    sys.exit(main())
