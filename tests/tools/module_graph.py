#!/usr/bin/env python3
"""The module graph of each crate under crates/: who uses whom (`crate::X`), checked
to have no circle, so that every import runs one way (down). Also lists the files
over the size budget.

    python3 tests/tools/module_graph.py            # check; exit 1 on a circle
    python3 tests/tools/module_graph.py --print    # and print the layers, top first

A module is a top-level file or directory of a crate's src/ (`session/` with its
files is one module). Tests (`#[cfg(test)]` blocks) and comments do not count.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 500
#: Files allowed over MAX_LINES, and why (one idea that needs the room).
LONG_OK: dict[str, str] = {}

USE_RE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def strip_tests(text: str) -> str:
    """The code that counts: without `#[cfg(test)]` blocks and comments (doc links
    such as [`crate::x`] are not imports)."""
    i = text.find("#[cfg(test)]")
    text = text if i < 0 else text[:i]
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def modules(src: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for p in sorted(src.iterdir()):
        if p.is_file() and p.suffix == ".rs" and p.stem not in ("lib", "main"):
            out[p.stem] = [p]
        elif p.is_dir() and p.name != "bin":
            out[p.name] = sorted(p.rglob("*.rs"))
    return out


def graph(src: Path) -> dict[str, set[str]]:
    mods = modules(src)
    g: dict[str, set[str]] = {m: set() for m in mods}
    for m, files in mods.items():
        for f in files:
            for dep in USE_RE.findall(strip_tests(f.read_text())):
                if dep != m and dep in mods:
                    g[m].add(dep)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def layers(g: dict[str, set[str]]) -> list[list[str]]:
    """Modules by depth: layer 0 uses nothing; layer n uses only layers below n."""
    depth: dict[str, int] = {}

    def d(v: str) -> int:
        if v not in depth:
            depth[v] = 0
            depth[v] = 1 + max((d(w) for w in g[v]), default=-1)
        return depth[v]

    for v in g:
        d(v)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for v, n in depth.items():
        out[n].append(v)
    return [sorted(layer) for layer in out]


def main() -> int:
    show = "--print" in sys.argv
    bad = 0
    for src in sorted(ROOT.glob("crates/*/src")):
        crate = src.parent.name
        g = graph(src)
        for c in cycles(g):
            print(f"{crate}: circle between {', '.join(c)}")
            bad += 1
        if show and not cycles(g):
            print(f"{crate} (top first):")
            for n, layer in reversed(list(enumerate(layers(g)))):
                print(f"  {n}: {' '.join(layer)}")
    for f in sorted(ROOT.glob("crates/**/*.rs")):
        rel = str(f.relative_to(ROOT))
        n = sum(1 for _ in f.open())
        if n > MAX_LINES and rel not in LONG_OK:
            print(f"{rel}: {n} lines (budget {MAX_LINES}; split it, or add it to LONG_OK with why)")
            bad += 1
    if bad:
        return 1
    print("module graph: no circle in any crate; every file within its size budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
