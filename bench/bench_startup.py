"""How long ``retain --help`` takes to start, against the libraries every command needs.

Runs each command in a fresh subprocess, ``--runs`` times (default 5), and prints the median wall
time of ``retain --help`` (as ``python -c "import cli; cli.run()"``, what the console script does)
and of ``python -c "import typer, rich, sqlalchemy"`` measured in the same run, and their ratio (the
target: within 2x). Run: ``python bench/bench_startup.py [--runs N]``. No asserts: figures only, as
the machine's load moves them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "retain --help": [sys.executable, "-c", "import sys, cli; sys.argv = ['retain', '--help']; cli.run()"],
    "import typer, rich, sqlalchemy": [sys.executable, "-c", "import typer, rich, sqlalchemy"],
}


def wall_time(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (the median is printed)")
    runs = parser.parse_args().runs
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):  # interleaved: a change in the machine's load falls on both alike
        for name, command in COMMANDS.items():
            times[name].append(wall_time(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        spread = f"{min(times[name]):.3f} to {max(times[name]):.3f}"
        print(f"{name:<32} median {median:.3f} s  ({runs} runs, {spread} s)")
    help_time, baseline = medians["retain --help"], medians["import typer, rich, sqlalchemy"]
    print(f"ratio: {help_time / baseline:.2f}x the import of typer, rich and sqlalchemy (target: within 2x)")


if __name__ == "__main__":
    main()
