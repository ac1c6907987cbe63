"""The `masn` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence


def _bench_model(args: argparse.Namespace) -> int:
    from pipeline.bench import run_model_bench

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="masn",
        description="MASN video question answering: features, training, evaluation, answers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
