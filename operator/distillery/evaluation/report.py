"""The evaluation report: lineage hashes, and the JSON / Markdown / PNG renderings.

JSON is for machines (a model registry, the operator), Markdown for a person reading
the storage, and the PNG of score versus latency for a person who would rather look.
The lineage section lets anyone trace a student back to the exact spec, data and
teacher that made it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distillery import __version__, atomic
from distillery.api import DistillationJob
from distillery.contract.cost import cost_lines, cost_markdown
from distillery.contract.report import EvaluationReport, StudentFiles
from distillery.evaluation import benchmarks
from distillery.storage import ANSWERS, Layout, resolve_model, shard_name

_CHUNK = 1 << 20


# ------------------------------------------------------------------ hashing


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_hash(job: DistillationJob) -> str:
    """sha256 of the spec as canonical JSON (camelCase, defaults filled in): equal specs, equal hashes."""
    spec = job.spec.model_dump(mode="json", by_alias=True)
    return "sha256:" + hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _files(root: Path, patterns: Iterable[str]) -> list[Path]:
    found = {p for pattern in patterns for p in root.rglob(pattern) if p.is_file()}
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def tree_digest(root: Path, patterns: Iterable[str] = ("*",)) -> dict[str, Any]:
    """One hash over a directory's files (relative path and content of each, in sorted order).

    Renaming, adding or changing any file changes it; timestamps do not.
    """
    if not root.is_dir():
        return {"sha256": None, "files": 0, "bytes": 0, "missing": True}
    digest = hashlib.sha256()
    files = _files(root, patterns)
    size = 0
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode() + b"\n")
        size += path.stat().st_size
    return {"sha256": "sha256:" + digest.hexdigest(), "files": len(files), "bytes": size}


def _input_digest(
    job: DistillationJob, layout: Layout, location: str | None, field: str
) -> dict[str, Any] | None:
    """A local input's sha256; an object's ETag, size and time (an object may be terabytes: not re-read)."""
    from distillery.datasource import InputError, identity

    if location is None:
        return None
    try:
        found = identity(location, root=layout.root, store=job.spec.storage.object_store, field=field)
    except InputError:
        return {"path": location, "sha256": None, "missing": True}
    return {"path": location, "sha256": found.pop("sha256", None), **found}


def lineage(job: DistillationJob, layout: Layout) -> dict[str, Any]:
    """Everything that made the student, each with a content hash where the content is on storage.

    The teacher's and the base model's weights are named, not hashed (a teacher can be
    hundreds of GB); the data, the generated records and the student are hashed.
    """
    spec = job.spec
    if spec.teacher.endpoint is not None:
        teacher = {"endpoint": spec.teacher.endpoint.url, "model": spec.teacher.endpoint.model}
    else:
        teacher = {
            "model": spec.teacher.model,
            "resolved": resolve_model(layout.root, spec.teacher.model or ""),
        }
    student_files = []
    if layout.student.is_dir():
        for path in _files(layout.student, ["*"]):
            student_files.append(
                {
                    "path": path.relative_to(layout.student).as_posix(),
                    "bytes": path.stat().st_size,
                    "sha256": file_sha256(path),
                }
            )
    return {
        "job": job.metadata.name,
        "specHash": spec_hash(job),
        "distilleryVersion": __version__,
        "teacher": teacher,
        "studentBase": {
            "model": spec.student.model,
            "resolved": resolve_model(layout.root, spec.student.model),
        },
        "trainingMethod": spec.training.method.value,
        "data": {
            "train": _input_digest(job, layout, spec.data.train, "data.train"),
            "validation": _input_digest(job, layout, spec.data.validation, "data.validation"),
        },
        "generated": {
            split: tree_digest(layout.generated(split), [shard_name(None, spec.generation.shards, ANSWERS)])
            for split in ("train", "validation")
        },
        "student": {"path": _relative(layout, layout.student), "files": student_files},
    }


def _relative(layout: Layout, path: Path) -> str:
    try:
        return path.relative_to(layout.root).as_posix()
    except ValueError:
        return str(path)


# ------------------------------------------------------------------ model size


def safetensors_parameters(model_dir: Path) -> int | None:
    """Parameters stored in a model directory's safetensors files, read from their headers only.

    No weights are loaded, so this costs milliseconds even for a large model.
    """
    total, seen = 0, False
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_len))
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= dim
            total += count
        seen = True
    return total if seen else None


def directory_bytes(model_dir: Path) -> int | None:
    """Bytes on disk of a model directory (every file in it), None when it is not a local directory."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return None
    return sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())


# ------------------------------------------------------------------ renderings


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _count(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


TASK_COLUMNS = (
    ("accuracy", "accuracy"),
    ("bleu", "BLEU"),
    ("rougeL", "ROUGE-L"),
    ("teacherAgreement", "agreement"),
)


def summary_lines(report: EvaluationReport | dict[str, Any]) -> list[str]:
    """The few lines a person reads at the end of `distillery run` / `distillery evaluate`."""
    report = EvaluationReport.of(report)
    metric = report.metric
    lines = [
        f"evaluation of {report.job} on {report.samples} validation records ({report.task_type}, score = {metric})"
    ]
    for name, entry in report.compared():
        lines.append(
            f"  {name:<9}{metric} {_num(entry.score)}   p50 {_num(entry.latency_p50_ms, 0)} ms"
            f"   p95 {_num(entry.latency_p95_ms, 0)} ms   {_num(entry.output_tokens_per_second, 0)} tok/s"
            f"   {_num(entry.cpu_ms_per_output_token, 1)} CPU-ms/tok"
            f"   {_count(entry.parameters)} params" + ("" if entry.live else "   (from generation records)")
        )
    if report.measurement is not None:
        lines.append(f"  measured: {report.measurement.text}")
    if report.retention is not None:
        lines.append(f"  retention {report.retention:.3f} (student / teacher)")
    delta = report.improvement.absolute if report.improvement else None
    if delta is not None:
        lines.append(f"  improvement over baseline {delta:+.3f} {metric}")
    lines += benchmarks.summary_lines(report)
    gate = report.gate
    lines.append(f"  {'PASSED' if gate.passed else 'FAILED'}: {gate.reason}")
    if report.rejudged:
        lines.append("  (the stored scores, re-judged with the current gate; nothing was served again)")
    if report.cost:
        lines += ["  " + line for line in cost_lines(report.cost)]
    output = report.output
    if output:
        lines.append(
            f"  output: {'exported to' if output.written else 'not exported to'} {output.uri}"
            + ("" if output.written else f" ({output.reason})")
        )
    return lines


def render_markdown(report: EvaluationReport | dict[str, Any], png_name: str | None) -> str:
    report = EvaluationReport.of(report)
    metric = report.metric
    gate = report.gate
    out = [
        f"# Evaluation of `{report.job}`",
        "",
        f"**Quality gate {'passed' if gate.passed else 'FAILED'}** — {gate.reason}",
        "",
        f"Task `{report.task_type}`, score = **{metric}**, on {report.samples} held-out validation records, "
        f"greedy decoding, at most {report.max_tokens} tokens, {report.concurrency} requests in flight. "
        f"Written {report.created}.",
        "",
    ]
    if report.measurement is not None:
        out += [f"Latency and throughput: {report.measurement.text}.", ""]
    present = [m.model_dump(by_alias=True, exclude_unset=True) for m in report.models.values()]
    columns = [key for key, _ in TASK_COLUMNS if any(key in m for m in present)]
    header = [
        "model",
        metric,
        *[dict(TASK_COLUMNS)[c] for c in columns if c != metric],
        "p50 ms",
        "p95 ms",
        "tokens/s",
        "peak memory",
        "parameters",
        "size",
        "source",
    ]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in report.compared():
        row = [f"**{name}**", _num(entry.score)]
        row += [_num(entry.value(c)) for c in columns if c != metric]
        row += [
            _num(entry.latency_p50_ms, 0),
            _num(entry.latency_p95_ms, 0),
            _num(entry.output_tokens_per_second, 1),
            _bytes(entry.peak_memory_bytes),
            _count(entry.parameters),
            _bytes(entry.size_bytes),
            entry.source,
        ]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    if report.retention is not None:
        out.append(f"- **Retention** (student / teacher {metric}): {report.retention:.3f}")
    imp = report.improvement
    if imp is not None and imp.absolute is not None:
        rel = f" ({imp.relative:+.1%})" if imp.relative is not None else ""
        out.append(f"- **Improvement over the baseline**: {imp.absolute:+.3f} {metric}{rel}")
    for check in gate.checks:
        out.append(f"- gate `{check.name}`: {'ok' if check.passed else 'FAILED'} — {check.text}")
    out.append("")
    if png_name:
        out += [f"![score versus p95 latency]({png_name})", ""]
    out += benchmarks.markdown_lines(report)
    if report.cost:
        out += ["## Cost", "", *cost_markdown(report.cost), ""]
    if report.notes:
        out += ["## Notes", ""] + [f"- {note}" for note in report.notes] + [""]
    return "\n".join(out + _lineage_markdown(report)) + "\n"


def _lineage_markdown(report: EvaluationReport) -> list[str]:
    """The report's Lineage section: what the student was made from, and where it went."""
    lin = report.lineage
    out = [
        "## Lineage",
        "",
        f"- spec: `{lin.spec_hash}` (distillery {lin.distillery_version}, method `{lin.training_method}`)",
        f"- teacher: `{lin.teacher.model}`" + (f" at {lin.teacher.endpoint}" if lin.teacher.endpoint else ""),
        f"- student base: `{lin.student_base.model}`",
    ]
    for split, entry in lin.data.items():
        if entry:
            out.append(f"- {split} data: `{entry.path}` `{entry.identity}`")
    for split, tree in lin.generated.items():
        out.append(f"- generated {split}: {tree.files} files, `{tree.sha256}`")
    cleaning = report.data_cleaning
    if cleaning:
        out.append(
            f"- teacher data: {cleaning.decontaminated} training prompts dropped by decontamination, "
            f"{cleaning.rejected} answers rejected by the filters, {cleaning.duplicates} "
            "duplicates across shards dropped by training"
        )
    prints = report.fingerprints.model_dump() if report.fingerprints else {}
    if prints:
        out.append("- stage fingerprints: " + ", ".join(f"{k} `{v}`" for k, v in prints.items()))
    output = report.output
    if output:
        out.append(
            f"- output: {'exported to' if output.written else 'not exported to'} `{output.uri}`"
            f" ({output.reason})"
        )
    student = lin.student or StudentFiles(path="")
    out.append(f"- student: `{student.path}`")
    out += [f"  - `{f.path}` {_bytes(f.bytes)} `{f.sha256}`" for f in student.files]
    return out


def render_png(report: EvaluationReport | dict[str, Any], path: Path) -> bool:
    """Score versus p95 latency, one labelled point per model, gate thresholds as dashed lines.

    Returns False (and writes nothing) when no model has both values.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display in pods
    import matplotlib.pyplot as plt

    report = EvaluationReport.of(report)
    colors = {"teacher": "#1f77b4", "baseline": "#7f7f7f", "student": "#d62728"}
    points = [
        (name, e.latency_p95_ms, e.score)
        for name, e in report.compared()
        if e.latency_p95_ms is not None and e.score is not None
    ]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for name, latency, score in points:
        ax.scatter([latency], [score], s=90, color=colors[name], zorder=3)
        ax.annotate(name, (latency, score), textcoords="offset points", xytext=(8, 6), fontsize=10)
    gate = report.gate.thresholds()
    if "minScore" in gate:
        ax.axhline(gate["minScore"], linestyle="--", color="#2ca02c", linewidth=1, label="gate: minScore")
    if "maxLatencyMs" in gate:
        ax.axvline(
            gate["maxLatencyMs"], linestyle="--", color="#ff7f0e", linewidth=1, label="gate: maxLatencyMs"
        )
    teacher = report.score("teacher")
    if "minRetention" in gate and teacher is not None:
        ax.axhline(
            gate["minRetention"] * teacher,
            linestyle=":",
            color="#9467bd",
            linewidth=1,
            label="gate: minRetention x teacher",
        )
    ax.set_xlabel("p95 latency per response (ms)")
    ax.set_ylabel(report.metric)
    # A little room below 0 and beside the points, so a model scoring 0 keeps its label.
    ax.set_ylim(bottom=-0.08, top=max(1.0, max(p[2] for p in points)) * 1.1)
    ax.set_xlim(left=0, right=max(p[1] for p in points) * 1.25 + 1)
    verdict = "passed" if report.gate.passed else "FAILED"
    ax.set_title(f"{report.job}: {report.metric} vs latency (gate {verdict})")
    ax.grid(True, alpha=0.3)
    if gate:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic.replacing(path, binary=True) as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return True


def write_report(report: dict[str, Any], json_path: Path) -> dict[str, Path]:
    """Write the JSON, the PNG and the Markdown beside each other; returns their paths."""
    png = json_path.with_suffix(".png")
    paths = {"json": json_path}
    if render_png(report, png):
        paths["png"] = png
    md = json_path.with_suffix(".md")
    atomic.write_text(md, render_markdown(report, png.name if "png" in paths else None))
    paths["markdown"] = md
    atomic.write_json(json_path, report, sort_keys=False)  # last: a report is complete once its JSON is there
    return paths
