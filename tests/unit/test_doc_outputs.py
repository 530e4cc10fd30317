"""What the docs show is what the code does: progress lines, `kubectl get dj` columns, the jobs shown."""

from __future__ import annotations

import re

import pytest
import yaml

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


def test_every_distillationjob_shown_in_the_docs_is_valid():
    """A job a reader copies from README.md or docs/ passes `distillery validate`'s parser."""
    from distillery.errors import InvalidJob, parse_job
    from tests.support.doc_commands import doc_files

    jobs, invalid = 0, []
    for path in doc_files():
        for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S):
            document = yaml.safe_load(block)
            if not isinstance(document, dict) or document.get("kind") != "DistillationJob":
                continue  # chart values and other snippets
            jobs += 1
            try:
                parse_job(document, path.name)
            except InvalidJob as error:
                invalid.append(f"{path.name}: {error}")
    assert jobs >= 1 and invalid == [], invalid
