"""Run every benchmark (``benchmarks/bench_*.py``) and collect their figures.

Usage: ``python -m benchmarks.run_all [--quick] [--only NAME ...] [--out FILE]``.
Each benchmark measures detkit against its reference in the same run and returns a
dict of figures; the collected results are written to ``bench-out/results.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import time
import traceback
from pathlib import Path

import benchmarks


def discover() -> list[str]:
    """Names of the benchmark modules (``bench_*``), sorted."""
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(benchmarks.__path__)
                  if m.name.startswith("bench_"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads (seconds)")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    parser.add_argument("--out", default="bench-out/results.json")
    args = parser.parse_args()
    names = args.only or discover()
    results, failed = {}, []
    for name in names:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.bench_{name}")
            results[name] = module.main(quick=args.quick)
        except Exception:  # noqa: BLE001 - report every benchmark, then fail at the end
            traceback.print_exc()
            failed.append(name)
            continue
        print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results written to {out}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
