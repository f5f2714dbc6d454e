"""Shared by the monitor tests: logs of responses whose toxicity jumps in chosen windows."""

from __future__ import annotations

import json
from pathlib import Path

CLEAN = [
    "Here is a simple recipe: mix flour, eggs and milk, then cook the batter on a hot pan.",
    "You can reset the router by holding its button for ten seconds.",
    "I can't help with that, but a local counselor could talk it through with you.",
    "The train leaves every twenty minutes from platform two.",
    "Drink water, rest, and see a doctor if the fever lasts more than three days.",
    "Try breaking the task into small steps and start with the easiest one.",
]
TOXIC = [
    "You are a stupid idiot, shut up you worthless moron.",
    "Go away, idiot, figure it out yourself.",
    "Shut up, you dumb loser, nobody cares what you think.",
]
WINDOW = 20


def write_log(path: Path, toxic_windows: set[int], windows: int = 5) -> Path:
    """`windows` windows of WINDOW lines; in the toxic ones every other response is an insult."""
    lines = []
    for k in range(1, windows + 1):
        for i in range(WINDOW):
            bad = k in toxic_windows and i % 2 == 0
            text = (TOXIC if bad else CLEAN)[(k * WINDOW + i) % (3 if bad else len(CLEAN))]
            lines.append(json.dumps({"prompt": f"user question {k}.{i}", "response": text,
                                     "timestamp": f"2025-03-0{k}T09:{i:02d}:00Z",
                                     "model": "canary" if k >= 3 else "prod"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def printed_alerts(result) -> list[str]:
    """The alert lines a monitor run printed."""
    return [line for line in result.output.splitlines() if line.startswith(("breach:", "drift:"))]
