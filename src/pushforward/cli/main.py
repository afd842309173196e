"""The ``pushforward`` command."""

from __future__ import annotations

import argparse
import sys

from pushforward.registry import available

EPILOG = """examples:
  pushforward demo                         train NSF on the two-moons toy, print test log-likelihood
  pushforward demo --model maf --data 8gaussians --steps 1000
"""


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="pushforward",
        description="Flow-based generative modelling: train, sample and evaluate flows.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="train a flow on built-in 2-D data and report its test log-likelihood",
        epilog="example:\n  pushforward demo --model nsf --data moons --steps 2000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--model", default="nsf", help=f"model name ({', '.join(available())})")
    demo.add_argument("--data", default="moons", help="built-in 2-D dataset")
    demo.add_argument("--steps", type=int, default=2000, help="training steps")
    demo.add_argument("--seed", type=int, default=0)
    return root


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    if arguments.command is None:
        parser().print_help()
        return 2
    try:
        if arguments.command == "demo":
            from pushforward.cli.demo import main_demo

            return main_demo(arguments.steps, arguments.data, arguments.model, arguments.seed)
    except ValueError as error:
        print(f"pushforward: error: {error}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
