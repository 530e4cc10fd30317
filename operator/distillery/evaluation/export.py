"""The export to `spec.output`: the student, its report and a model card, in an object store or on the storage.

    <output>/                  the student as a Hugging Face model directory: *.safetensors,
                               config.json, generation_config.json, tokenizer files, chat template
    <output>/report/           evaluation.json, evaluation.md, evaluation.png, training.json
    <output>/README.md         the model card (`evaluation.card`), written last: once it is there,
                               the rest is complete (a new export removes it first; a reader of
                               the output must require it)

Written when the quality gate passes, or always with `output.when: always`. Files are streamed
to the store one by one (s3fs uploads large ones in parts); the credentials come from the
environment, as for the inputs (`datasource`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillery import atomic
from distillery.api import DistillationJob
from distillery.contract.report import EvaluationReport, TrainingReport
from distillery.contract.summaries import FailureReason, StageFailed
from distillery.datasource import filesystem, resolve
from distillery.evaluation.card import model_card
from distillery.storage import Layout

MARKER = "README.md"  # the completion marker: the model card, written last
REPORT_FILES = ("evaluation.json", "evaluation.md", "evaluation.png", "training.json")


class ExportFailed(StageFailed):
    reason = FailureReason.export_failed


def plan(job: DistillationJob, report: EvaluationReport | dict[str, Any]) -> dict[str, Any] | None:
    """The report's `output` entry: where the export goes and whether it is written (pure)."""
    output = job.spec.output
    if output is None:
        return None
    if not EvaluationReport.of(report).gate.passed and output.when != "always":
        return {
            "uri": output.uri,
            "written": False,
            "reason": "the quality gate failed; output.when is gatePassed (set it to always to export anyway)",
        }
    return {"uri": output.uri, "written": True, "reason": f"output.when is {output.when}"}


def files_to_export(layout: Layout) -> list[tuple[Path, str]]:
    """(local file, path under the output) for the student and the reports, in upload order."""
    student = sorted(p for p in layout.student.rglob("*") if p.is_file())
    reports = [layout.reports / name for name in REPORT_FILES if (layout.reports / name).is_file()]
    return [(p, p.relative_to(layout.student).as_posix()) for p in student] + [
        (p, f"report/{p.name}") for p in reports
    ]


def export(job: DistillationJob, layout: Layout, report: dict[str, Any]) -> dict[str, Any]:
    """Write the student, the reports and README.md to `spec.output`; returns what was written.

    Raises ExportFailed naming the location when the store refuses or is unreachable.
    """
    output = job.spec.output
    assert output is not None
    target = resolve(output.uri, layout.root)
    from fsspec.implementations.local import LocalFileSystem

    try:
        training = TrainingReport.read(layout.training_report)
        card = layout.reports / "model-card.md"
        atomic.write_text(card, model_card(job, report, training))
        fs, base = filesystem(target, job.spec.storage.object_store)
        marker = f"{base.rstrip('/')}/{MARKER}"
        if fs.exists(marker):  # an earlier export is being replaced: incomplete until the card is back
            fs.rm_file(marker)
        written = 0
        for local, relative in [*files_to_export(layout), (card, MARKER)]:  # the marker last
            remote = f"{base.rstrip('/')}/{relative}"
            if isinstance(fs, LocalFileSystem):  # a file system's copy is not atomic; an object PUT is
                atomic.copy_file(local, Path(remote))
            else:
                fs.put_file(str(local), remote)
            written += local.stat().st_size
    except StageFailed:
        raise
    except Exception as error:
        kind = "access denied" if isinstance(error, PermissionError) else f"{type(error).__name__}: {error}"
        raise ExportFailed(f"output.uri ({output.uri}): cannot write the export: {kind}") from None
    return {"files": len(files_to_export(layout)) + 1, "bytes": written}
