"""`make bench`: every benchmark in turn, each figure printed as ``name: value`` as soon as it is known.

A benchmark is a function returning an iterable of ``(name, value)`` pairs; add yours to
``BENCHES`` as ``"module:function"``. Everything runs on this machine, on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time

BENCHES: list[str] = [
    "bench.ingest:bench_ingest",
    "bench.train:bench_train",
    "bench.index:bench_index",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--only", action="append", metavar="MODULE:FUNCTION", help="Run only these benchmarks.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    failed = 0
    for spec in args.only or BENCHES:
        module_name, _, function_name = spec.partition(":")
        started = time.monotonic()
        try:
            bench = getattr(importlib.import_module(module_name), function_name)
            for name, value in bench():
                print(f"{name}: {_format(value)}", flush=True)
        except Exception as error:  # one broken bench must not hide the others' figures
            failed += 1
            logging.exception("%s failed", spec)
            print(f"{function_name}_error: {error!r}", flush=True)
        print(f"{function_name}_duration_s: {time.monotonic() - started:.1f}", flush=True)
    return 1 if failed else 0


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
