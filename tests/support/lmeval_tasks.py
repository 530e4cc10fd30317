"""Two tiny lm-eval tasks over the tiny models' domain, written at test time (no hub, no network).

`tiny_sentiment` is multiple choice (loglikelihood: needs prompt log-probabilities from the server);
`tiny_sums` is generate_until (the model's greedy answer, exact match). Both name a JSONL file
beside their YAML by a relative path (the stage loads tasks from inside their directory), as an
offline cluster's task directory would hold them.
"""

from __future__ import annotations

import json
from pathlib import Path

SENTIMENT = "tiny_sentiment"
SUMS = "tiny_sums"

_REVIEWS = [
    ("a great film.", 1),
    ("a bad film.", 0),
    ("a wonderful story.", 1),
    ("a boring plot.", 0),
    ("a lovely cast.", 1),
    ("an awful script.", 0),
]
_SUMS = [(2, 4), (3, 5), (1, 1), (4, 4), (6, 3), (7, 2)]

_SENTIMENT_YAML = """\
task: tiny_sentiment
dataset_path: json
dataset_kwargs:
  data_files:
    test: sentiment.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "What is the sentiment of this review? Review: {{review}}\\nAnswer:"
doc_to_choice: ["negative", "positive"]
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

_SUMS_YAML = """\
task: tiny_sums
dataset_path: json
dataset_kwargs:
  data_files:
    test: sums.jsonl
test_split: test
output_type: generate_until
doc_to_text: "What is {{a}}+{{b}}?"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["\\n", "."]
  max_gen_toks: 4
  do_sample: false
filter_list:
  - name: strip
    filter:
      - function: regex
        regex_pattern: '(\\d+)'
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_tasks(directory: Path, *, with_data: bool = True) -> Path:
    """Write both tasks' YAML (and, unless `with_data` is False, their JSONL) under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tiny_sentiment.yaml").write_text(_SENTIMENT_YAML)
    (directory / "tiny_sums.yaml").write_text(_SUMS_YAML)
    if with_data:
        rows = [{"review": text, "label": label} for text, label in _REVIEWS]
        (directory / "sentiment.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        sums = [{"a": a, "b": b, "answer": str(a + b)} for a, b in _SUMS]
        (directory / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sums))
    return directory
