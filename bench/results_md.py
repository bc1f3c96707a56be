"""bench/RESULTS.md: each benchmark script owns one section between its own markers and rewrites only that."""

from __future__ import annotations

from pathlib import Path

from jiansuo.atomic import atomic_write

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(name: str, text: str, results: Path = RESULTS) -> None:
    """Replace the section ``<!-- bench/NAME -->`` … ``<!-- /bench/NAME -->`` with ``text`` (appended if absent)."""
    begin, end = f"<!-- bench/{name} -->", f"<!-- /bench/{name} -->"
    old = results.read_text() if results.is_file() else "# Benchmark results\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    atomic_write(results, new)
