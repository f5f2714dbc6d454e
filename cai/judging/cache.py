"""The judge's answers on disk, so a judge is never asked the same question twice.

One JSONL line per answered conversation, keyed by (judge model, rendered
conversation, labels), appended and flushed as each answer arrives: rerunning
`cai data pairs` with another threshold or strategy reads them back instead of
asking, and a kill loses at most the requests in flight (a torn last line is cut).
Failed conversations are not stored, so a rerun asks again.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from cai.engines.base import Conversation, LabelRead
from cai.io import read_jsonl_records

FILE_NAME = "judge-cache.jsonl"


def cache_key(model: str, conversation: Conversation, labels: list[str]) -> str:
    text = json.dumps([model, conversation, list(labels)], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class JudgeCache:
    """{key: LabelRead} read from `path` at start; `put` appends one line (thread-safe)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.reads: dict[str, LabelRead] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            for row in read_jsonl_records(self.path, repair=True):
                try:
                    self.reads[row["key"]] = LabelRead(tuple(float(x) for x in row["logprobs"]),
                                                       tuple(row.get("floored") or ()))
                except (KeyError, TypeError, ValueError):
                    continue            # a line of another format: asked again, then overwritten in memory

    def get(self, key: str) -> LabelRead | None:
        return self.reads.get(key)

    def put(self, key: str, read: LabelRead) -> None:
        line = json.dumps({"key": key, "logprobs": list(read.logprobs), "floored": list(read.floored)}) + "\n"
        with self._lock:
            self.reads[key] = read
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
