"""Check that a built wheel holds every package of the checkout, each with its py.typed.

    python .ci/check_wheel.py dist/otel_identity-*.whl

A package is a folder with an ``__init__.py`` under ``otel_identity/`` or ``instrumentations/``
(the two roots pyproject.toml's package finder reads); a package missing from the wheel, or
without its ``py.typed`` marker, or a non-Python file of the source tree left out (package
data such as the report's HTML template), fails the check.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def expected_files() -> set[str]:
    """Every file the wheel must hold, as wheel paths (``otel_identity_grpc/_client.py``)."""
    files: set[str] = set()
    for base in (ROOT, ROOT / "instrumentations"):
        for top in base.glob("otel_identity*/__init__.py"):
            for path in top.parent.rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    files.add(path.relative_to(base).as_posix())
    return files


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with zipfile.ZipFile(argv[0]) as wheel:
        held = set(wheel.namelist())
    expected = expected_files()
    missing = sorted(expected - held)
    untyped = sorted(
        name.rsplit("/", 1)[0]
        for name in held
        if name.endswith("/__init__.py")
        and name.count("/") == 1
        and name.rsplit("/", 1)[0] + "/py.typed" not in held
    )
    for name in missing:
        print(f"check_wheel: missing from the wheel: {name}", file=sys.stderr)
    for name in untyped:
        print(f"check_wheel: package without py.typed: {name}", file=sys.stderr)
    if missing or untyped:
        return 1
    tops = sorted(
        {name.split("/", 1)[0] for name in held if "/" in name and ".dist-info" not in name}
    )
    print(f"check_wheel: {len(held)} files, packages: {', '.join(tops)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
