"""Writers killed mid-write: a real writer runs in a subprocess that dies after N bytes (the fault hook of
`distillery.atomic`, DISTILLERY_FAULT_AFTER_BYTES), at points a seeded generator picks; and a teacher
double that answers chat completions deterministically, for the generation shard (no model is needed
to test what the shard's files look like after a kill).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp.web

from distillery.atomic import FAULT_ENV, KILLED_EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]


def run_writer(script: str, args: list[str], budget: int | None, timeout: float = 120) -> int:
    """Run `script` (Python source, given `args` as sys.argv[1:]) with a fault budget of `budget` bytes
    (None: no fault); returns its exit code, KILLED_EXIT_CODE when the hook killed it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    env.pop(FAULT_ENV, None)
    if budget is not None:
        env[FAULT_ENV] = str(budget)
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode not in (0, KILLED_EXIT_CODE):
        raise AssertionError(f"the writer failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.returncode


def answer(content: str, sample: int) -> str:
    """What the teacher double answers to a prompt (sample k of n)."""
    return f"answer {sample} to: {content}"


class TeacherDouble:
    """An OpenAI-compatible server on the loopback serving model `teacher`: GET /v1/models and
    POST /v1/chat/completions (n choices, usage counted in words). Runs its own loop in a thread."""

    model = "teacher"

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: aiohttp.web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _models(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"object": "list", "data": [{"id": self.model}]})

    async def _chat(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        body: dict[str, Any] = await request.json()
        content = body["messages"][-1]["content"]
        choices = [
            {
                "index": k,
                "message": {"role": "assistant", "content": answer(content, k)},
                "finish_reason": "stop",
            }
            for k in range(int(body.get("n") or 1))
        ]
        words = len(content.split())
        usage = {"prompt_tokens": words, "completion_tokens": 4 * len(choices)}
        return aiohttp.web.json_response({"model": self.model, "choices": choices, "usage": usage})

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = aiohttp.web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = aiohttp.web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> TeacherDouble:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the teacher double did not start")
        return self

    def __exit__(self, *_: object) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# The writers, as the stages call them. Each reads its arguments from sys.argv.

GENERATE = """
import json, sys
from pathlib import Path
from distillery.api import DistillationJob
from distillery.generation.shard import generate_shard
from distillery.serving.client import TeacherConnection
job = DistillationJob.model_validate(json.loads(sys.argv[1]))
generate_shard(job, Path(sys.argv[2]), 0, TeacherConnection(base_url=sys.argv[3], model="teacher"))
"""

CHECKPOINT = """
import sys, torch
from pathlib import Path
from distillery.training.checkpoints import Checkpoints
step = int(sys.argv[2])
torch.manual_seed(step)
Checkpoints(Path(sys.argv[1])).save(step, {"step": step, "weights": torch.randn(64, 256)})
"""

SUMMARY = """
import sys
from distillery.contract.commands import TERMINATION_LOG_ENV
from distillery.contract.summaries import TrainSummary, write_summary
write_summary(TrainSummary(step=int(sys.argv[2]), train_loss=1.0 / int(sys.argv[2])),
              {TERMINATION_LOG_ENV: sys.argv[1]})
"""

REPORT = """
import json, sys
from pathlib import Path
from distillery.evaluation.report import write_report
write_report(json.loads(sys.argv[2]), Path(sys.argv[1]))
"""


def report(fingerprint: str, score: float) -> dict[str, Any]:
    """A small evaluation report (as the stage writes it) made for `fingerprint`."""
    return {
        "fingerprints": {"evaluate": fingerprint},
        "job": "killed",
        "created": "2026-12-07T00:00:00Z",
        "taskType": "qa",
        "metric": "accuracy",
        "samples": 40,
        "models": {
            "teacher": {"score": 0.9, "latencyP50Ms": 40.0, "latencyP95Ms": 80.0},
            "student": {"score": score, "latencyP50Ms": 21.0, "latencyP95Ms": 31.0},
        },
        "retention": round(score / 0.9, 4),
        "gate": {"passed": True, "reason": "no gate", "checks": []},
        "notes": ["x" * 2000],  # long enough that a kill can fall inside each file
    }


EXPORT = """
import json, sys
from pathlib import Path
from distillery.api import DistillationJob
from distillery.evaluation.export import export
from distillery.storage import Layout
job = DistillationJob.model_validate(json.loads(sys.argv[1]))
export(job, Layout(Path(sys.argv[2]), job.metadata.name), json.loads(sys.argv[3]))
"""


def export_job(root: Path, output: Path) -> dict[str, Any]:
    """A job whose export goes to the directory `output`, as its JSON document."""
    return {
        "metadata": {"name": "killed"},
        "spec": {
            "teacher": {"model": "models/teacher"},
            "student": {"model": "models/student"},
            "data": {"taskType": "qa", "train": "data/train.jsonl", "validation": "data/validation.jsonl"},
            "output": {"uri": str(output), "when": "always"},
            "storage": {"path": str(root)},
        },
    }


def exported(output: Path) -> dict[str, bytes] | None:
    """What a reader of the export takes: every file, once the README.md marker is there; else None."""
    if not (output / "README.md").is_file():
        return None
    return {
        p.relative_to(output).as_posix(): p.read_bytes()
        for p in output.rglob("*")
        if p.is_file() and not p.name.endswith(".tmp")
    }
