"""The ``agent-datastore`` command: parses arguments, calls the package, formats results.

Exit codes: 0 success, 2 usage error, 3 database unavailable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from ._exceptions import DataStoreUnavailable, HTTPException
from .demo import run_demo

__all__ = ["main"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_ERROR = 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-datastore",
        description="A per-user, per-agent, namespaced JSON key-value store on MongoDB.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="run the reference's complete example on the embedded store",
        description=(
            "Index a sample repository into files:<repo> and summary:<repo>, search it, cache "
            "the answer, and print each step. Uses a new in-memory store: nothing persists."
        ),
    )
    demo.set_defaults(handler=lambda _args: run_demo())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.handler(args)
    except DataStoreUnavailable as exc:
        print(f"agent-datastore: {exc.detail}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except HTTPException as exc:
        print(f"agent-datastore: {exc.detail}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
