"""`python -m bench`: run the benchmarks, print their tables, write them as JSON; or compare two.

python -m bench --size full --out runs/bench/full.json     # the README's figures (12-35 min on 2 cores)
python -m bench --size small --only codecs,ingest          # some of them, smaller
python -m bench --compare before.json after.json           # before/after, with ratios
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import results
from bench.machine import load_average, machine_info
from bench.results import Section

BENCHMARKS = ("codecs", "ingest", "fleet_round", "flower")


def _runner(name: str) -> Callable[[str, Path], Section]:
    """Imported when run: each benchmark's imports (torch, the simulator) cost seconds."""
    if name == "codecs":
        from bench import codecs

        return lambda size, workdir: codecs.run(size)
    if name == "ingest":
        from bench import ingest

        return ingest.run
    if name == "fleet_round":
        from bench import fleet_round

        return fleet_round.run
    from bench import flower

    return flower.run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Nacelle's benchmarks: codecs, regional ingest, a whole round against its floor, Flower.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", choices=("tiny", "small", "full"), default="small", help="default small")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS)}"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench/work"), help="scratch space, emptied first")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="compare two result files")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.compare:
        print(results.compare(results.load(args.compare[0]), results.load(args.compare[1])))
        return 0
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        print(f"python -m bench: unknown benchmarks {unknown}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    machine = machine_info()
    print(
        f"machine: {machine['cores']} cores, {machine['cpu']}, python {machine['python']}, torch {machine['torch']}, "
        f"commit {machine['git_commit'][:10]}{' (dirty)' if machine['git_dirty'] else ''}; "
        f"load {machine['load_average_at_start']}",
        flush=True,
    )
    shutil.rmtree(args.workdir, ignore_errors=True)
    sections = []
    for name in chosen:
        began = time.monotonic()
        section = _runner(name)(args.size, (args.workdir / name).resolve())
        section.notes.append(f"({name}: {time.monotonic() - began:.0f}s, load average after {load_average()})")
        sections.append(section)
        print("\n" + results.render(section), flush=True)
    if args.out is not None:
        results.save(
            args.out, results.document(machine, ["python", "-m", "bench", *(argv or sys.argv[1:])], args.size, sections)
        )
        print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
