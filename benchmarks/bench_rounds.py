"""Interleaved rounds, the scripts' common ending and a process tree's memory, shared by the
benchmarks.

On a shared machine the same loop runs +-15% apart from one minute to the next, more than the
differences measured. So contenders take turns over several rounds, and the order rotates by
one each round: no contender always runs first (cold caches) or last (a drifted machine).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, TypeVar

import psutil

from hbt.errors import HbtError
from hbt.io import write_json_atomic

T = TypeVar("T")


def positive_int(text: str) -> int:
    """argparse type for counts of rounds and steps: a median of none is undefined."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def rotating_rounds(contenders: dict[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """`{name: [result of round 0, round 1, ...]}`; round r calls the contenders in their
    order rotated left by r."""
    names = list(contenders)
    results: dict[str, list[T]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(contenders[name]())
    return results


def report(args: argparse.Namespace, run: Callable[[argparse.Namespace], dict],
           format_table: Callable[[dict], str]) -> dict:
    """Run a benchmark on its parsed `args`, print its table, and write the numbers to
    `args.json` when given; -> the result. Bad input (a missing model, a language the corpus
    lacks) is one line on stderr and exit code 2, as for the `hbt` verbs."""
    try:
        result = run(args)
    except HbtError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_table(result))
    if args.json is not None:
        write_json_atomic(args.json, result)
    return result


def process_tree(root: psutil.Process) -> list[psutil.Process]:
    """`root` and its descendants (none when `root` has ended)."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_pss(root: psutil.Process) -> list[tuple[psutil.Process, str, int]]:
    """(process, command line, PSS in bytes) of every process of `root`'s tree; a process that
    ends between the listing and the read is left out."""
    sizes = []
    for process in process_tree(root):
        try:
            sizes.append((process, " ".join(process.cmdline()), process.memory_full_info().pss))
        except psutil.Error:
            continue
    return sizes
