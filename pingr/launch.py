"""The `pingr` command: keeps what `pingr run` never uses out of the process before anything
is imported, then hands over to pingr.cli (whose own imports would come too late: the config
layer imports httpx, and httpx imports its command-line client as it loads)."""

from __future__ import annotations

import sys

#: Modules `pingr run` never uses, made to fail on import (measured: bench/memory.py).
#: - `pydantic.v1` (1.5 MiB of RSS, 22 modules): FastAPI imports it only to ask whether each
#:   route's models are pydantic-v1 models; pingr has none, and FastAPI reads an ImportError
#:   as "no v1 models", the answer it would get anyway.
#: - `httpx._main` (click, rich, pygments: ~80 modules): httpx loads its command-line client
#:   whenever those happen to be installed beside pingr (a venv with the test extras, a Pi
#:   shared with other tools); without them it says "install httpx[cli]" if ever run.
#: - `trio` (52 modules, plus attrs, outcome, sortedcontainers): httpcore imports it whenever
#:   it is installed (selenium brings it) to find out whether it runs under trio; pingr runs on
#:   asyncio, and httpcore reads an ImportError as "not installed".
UNUSED = ("pydantic.v1", "httpx._main", "trio")


def skip_unused_imports() -> None:
    """Make UNUSED fail on import. Call before anything imports httpx or FastAPI."""
    for name in UNUSED:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["run"]:
        skip_unused_imports()
    from pingr.cli import main as cli_main

    return cli_main(argv)
