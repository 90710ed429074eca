"""`make bench`: run every benchmark in benchmarks/ and write BENCHMARKS.md.

Each benchmark is a module benchmarks/bench_*.py that prints a Markdown section when run as
`python -m benchmarks.bench_NAME`; they run one after another, each in its own process, so
one's memory does not weigh on the next.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).parent
ORDER = ("bench_tally", "bench_pooled", "bench_bytes", "bench_masking", "bench_flower", "bench_regression", "bench_dp_utility")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    pkgs = ", ".join(f"{p} {version(p)}" for p in ("numpy", "pandas", "scipy", "lifelines", "cryptography", "flwr"))
    return (f"- machine: {cpu}, {os.cpu_count()} cores, {mem:.0f} GiB\n- Python {platform.python_version()}, {pkgs}\n"
            f"- run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def main(argv: list[str]) -> None:
    wanted = [a for a in argv if not a.startswith("-")]
    names = [n for n in ORDER if (HERE / f"{n}.py").exists() and (not wanted or n in wanted)]
    names += sorted(p.stem for p in HERE.glob("bench_*.py") if p.stem not in ORDER and (not wanted or p.stem in wanted))
    sections = []
    for name in names:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], capture_output=True, text=True, check=False)
        out = proc.stdout.strip()
        print(out, flush=True)
        if proc.returncode != 0:
            out += f"\n\n(failed with exit status {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]})"
            print(proc.stderr, file=sys.stderr)
        sections.append(f"## {name}\n\n{out}\n\n_{time.perf_counter() - t0:.0f} s to run_\n")
    notes = HERE / "NOTES.md"
    text = ("# fedsurv benchmarks\n\nWritten by `make bench` (`python -m benchmarks`); medians of repeated runs.\n\n"
            + machine() + "\n\n" + (notes.read_text() + "\n" if notes.exists() else "") + "\n".join(sections))
    if not wanted:
        Path("BENCHMARKS.md").write_text(text)
        print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main(sys.argv[1:])
