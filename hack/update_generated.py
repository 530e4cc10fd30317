#!/usr/bin/env python3
"""Regenerate every generated file: the CRD and docs/api.md (from operator/distillery/api/)
and the Grafana dashboards (from hack/dashboards.py).

    python hack/update_generated.py          # write them
    python hack/update_generated.py --check  # exit 1 and name the stale ones

Tests run the check, so a model change without regenerating fails CI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

import dashboards  # noqa: E402  (hack/dashboards.py: the chart's Grafana dashboards)
from distillery.crd import render_crd  # noqa: E402
from distillery.docs import render_api_docs  # noqa: E402

CRD_NAME = "distillationjobs.distillery.dev.yaml"


def generated_files() -> dict[Path, str]:
    crd = render_crd()
    return {
        ROOT / "crds" / CRD_NAME: crd,
        ROOT / "charts" / "distillery" / "crds" / CRD_NAME: crd,
        ROOT / "docs" / "api.md": render_api_docs(),
        **dashboards.generated_files(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args()
    stale = []
    for path, text in generated_files().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if args.check and stale:
        print("stale generated files (run `python hack/update_generated.py`):", *stale, sep="\n  ")
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
