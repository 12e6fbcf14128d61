"""The `apiplus` console script: one subcommand per service, each with `run` and its offline commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Only the chosen service is imported: a worker loads its own code and nothing else.
SERVICES = {
    "ingest": "normalise gateway events and track channel health (run, webhook, normalize)",
    "dispatch": "validate, render, pace and send outbound messages (run, render)",
    "billing": "charges and invoices, exactly once (run, quote, replay)",
}


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="apiplus", description="apiplus stream processors")
    services = parser.add_subparsers(dest="service", required=True, metavar="SERVICE")
    chosen = args_in[0] if args_in and args_in[0] in SERVICES else None
    for name, summary in SERVICES.items():
        sub = services.add_parser(name, help=summary, description=summary)
        if name == chosen:
            importlib.import_module(f"services.{name}.cli").register(sub)
    args = parser.parse_args(args_in)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
