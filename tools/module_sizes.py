"""Lint: every module of the package stays within MAX_LINES (one concept per file; split a
module by concept when it grows past it). Exits 1 naming each module over the limit."""

from __future__ import annotations

import sys
from pathlib import Path

MAX_LINES = 450
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lmablate"


def oversized(package: Path = PACKAGE, limit: int = MAX_LINES) -> list[tuple[Path, int]]:
    """(module, lines) for every module of ``package`` over ``limit`` lines."""
    sizes = (
        (path, len(path.read_text(encoding="utf-8").splitlines())) for path in package.rglob("*.py")
    )
    return sorted((path, n) for path, n in sizes if n > limit)


def main() -> int:
    over = oversized()
    for path, n in over:
        print(
            f"{path.relative_to(PACKAGE.parents[1])}: {n} lines, over {MAX_LINES}; "
            "split it by concept"
        )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
