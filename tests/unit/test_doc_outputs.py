"""What the docs say the operator prints is what its code prints: progress lines and `kubectl get dj` columns."""

from __future__ import annotations

import re

import pytest

from distillery.api import Progress
from distillery.controller import readout
from distillery.crd import PRINTER_COLUMNS
from tests.support.doc_commands import ROOT

pytestmark = pytest.mark.unit


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_the_progress_lines_in_cluster_md_are_the_readouts():
    doc = _flat((ROOT / "docs" / "cluster.md").read_text())
    lines = [
        readout.generation(
            4, 1, 1250, {"shards_reporting": 3, "prompts_done": 600, "prompts_total": 3750}, 420
        )["summary"],
        readout.training(Progress(step=500, steps_total=1200, epoch=1.25, train_loss=0.421), 3, 1800)[
            "summary"
        ],
        readout.evaluation(Progress(models_done=1, models_total=3), 300)["summary"],
    ]
    missing = [line for line in lines if f"`{line}`" not in doc]
    assert missing == [], (
        f"docs/cluster.md shows progress lines the operator does not write; it writes {missing}"
    )


def test_the_readme_names_the_printer_columns_in_order():
    readme = _flat((ROOT / "README.md").read_text())
    shown = ["NAME"] + [c["name"].upper() for c in PRINTER_COLUMNS if not c.get("priority")]
    wide = [c["name"].upper() for c in PRINTER_COLUMNS if c.get("priority")]
    listed = ", ".join(shown[:-1]) + f" and {shown[-1]}"
    assert f"`kubectl get dj` shows the columns {listed} (`-o wide` adds {', '.join(wide)})" in readme
