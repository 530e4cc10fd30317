"""Teacher launch with the real vLLM module: a failed start is reported with the server's log."""

from __future__ import annotations

import time

import pytest

from distillery.serving.vllm import ServerStartError, local_vllm_server

pytestmark = pytest.mark.stages


def test_a_server_that_cannot_start_fails_fast_with_its_log(tmp_path):
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # no model_type: vLLM refuses it after importing
    started = time.monotonic()
    with (
        pytest.raises(
            ServerStartError, match=r"vLLM exited with code \d+ while starting: .+ \(log: .+vllm\.log\)$"
        ) as error,
        local_vllm_server(str(broken), "teacher", startup_timeout=300, log_path=tmp_path / "vllm.log"),
    ):
        pytest.fail("the server should not have started")
    # The process died: no waiting for the deadline, and the log says why.
    assert time.monotonic() - started < 240
    assert f"Unrecognized model in {broken}" in str(error.value)  # vLLM's own words, from its log
    assert error.value.cause.kind == "model"
