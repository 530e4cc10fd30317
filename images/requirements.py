"""Print what an image installs, from pyproject.toml alone, one requirement a line.

    python requirements.py pyproject.toml [--no-build-system] EXTRA...   > requirements.txt

[build-system] requires (unless --no-build-system), then [project] dependencies, then each
named extra. The Dockerfiles
install these in a layer of their own before the source is copied, so a change to the code
(or to pyproject.toml outside these tables) reuses the cached dependency layer; the package
itself is installed last with `pip install --no-deps --no-build-isolation .`.
Standard library only (tomllib: Python 3.11+), as it runs in the bare base image.
"""

from __future__ import annotations

import sys

import tomllib


def requirements(pyproject: dict, extras: list[str], build_system: bool = True) -> list[str]:
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(
            f"requirements.py: no extra {', '.join(unknown)} in [project.optional-dependencies] "
            f"(there are: {', '.join(sorted(optional))})"
        )
    found = list(pyproject.get("build-system", {}).get("requires", [])) if build_system else []
    found += project.get("dependencies", [])
    for extra in extras:
        found += optional[extra]
    return list(dict.fromkeys(found))  # first occurrence wins, order kept


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    build_system = "--no-build-system" not in argv[1:]
    extras = [arg for arg in argv[1:] if arg != "--no-build-system"]
    with open(argv[0], "rb") as handle:
        pyproject = tomllib.load(handle)
    sys.stdout.write("".join(line + "\n" for line in requirements(pyproject, extras, build_system)))


if __name__ == "__main__":
    main(sys.argv[1:])
