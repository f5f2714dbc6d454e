"""A small OpenAI-compatible server for tests: chat completions from a Python function, on 127.0.0.1.

`answer(body) -> (status, payload)` answers each POST to /v1/chat/completions (a payload
may also be `("sleep", seconds, (status, payload))` to answer late); every other path is a
404, as on a server without vLLM's /tokenize. Every request is kept in `requests`.

`judge_answer` is a judge that prefers the longer option (word counts) and answers as
servers do with `logprobs: true, top_logprobs: N`.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Stub:
    def __init__(self, answer):
        self.answer = answer
        self.requests: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.url = ""

    def chat_requests(self, model: str | None = None) -> list[dict]:
        with self.lock:
            return [b for path, b in self.requests
                    if path.endswith("/chat/completions") and (model is None or b.get("model") == model)]


@contextmanager
def serve(answer):
    """Start a stub answering with `answer`; yields the Stub (its `url` ends in /v1)."""
    stub = Stub(answer)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            with stub.lock:
                stub.requests.append((self.path, body))
            if not self.path.endswith("/chat/completions"):
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            result = stub.answer(body)
            if result[0] == "sleep":
                time.sleep(result[1])
                result = result[2]
            self._send(*result)

        def do_GET(self):
            self._send(404, {"error": {"message": f"no route {self.path}"}})

        def _send(self, status, payload, headers=None):
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Retry-After", "0")          # retries of a 5xx come at once
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):    # the client gave up waiting
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stub.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


def completion(text: str, top: list[tuple[str, float]] | None = None) -> dict:
    """A chat completion of `text`; with `top`, the first token's top log-probabilities."""
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if top is not None:
        choice["logprobs"] = {"content": [{"token": top[0][0], "logprob": top[0][1],
                                           "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}]}
    words = len(text.split())
    return {"choices": [choice], "usage": {"prompt_tokens": 10, "completion_tokens": words}}


def options(body: dict) -> tuple[str, str] | None:
    """The texts of options (A) and (B) in a judging question; None for another question."""
    text = body["messages"][-1]["content"]
    found = [re.search(rf"Option \({label}\): (.*?)(?:\n\n|$)", text, re.S) for label in "AB"]
    return None if None in found else tuple(m.group(1) for m in found)


def judge_top(body: dict, *, drop: str | None = None) -> list[tuple[str, float]]:
    """The top log-probabilities of a judge preferring the longer option: P(A) : P(B) as their word counts,
    0.9 between them and the rest on filler tokens; `drop` leaves that label out of the list."""
    a, b = (len(o.split()) for o in options(body) or ("A first", "B"))
    probs = {"A": 0.9 * a / (a + b), "B": 0.9 * b / (a + b)}
    filler = [f"word{i}" for i in range(30)]
    probs.update({t: 0.1 / len(filler) for t in filler})
    top = sorted(((t, math.log(p)) for t, p in probs.items() if t != drop), key=lambda x: -x[1])
    return top[:int(body.get("top_logprobs") or 0)]


def judge_answer(body: dict) -> tuple[int, dict]:
    """A judge server without `logprob_token_ids`: top_logprobs only."""
    if not body.get("logprobs"):
        return 200, completion("A")
    top = judge_top(body)
    return 200, completion(top[0][0], top)


def one_response_judge(p_good):
    """A judge of one response (the `judge` and `principle` questions: is it harmless, does it do well) whose
    P(yes) is `p_good(response)`; the questions comparing two responses go to `judge_answer`."""
    def answer(body):
        text = body["messages"][-1]["content"]
        response = re.search(r"\nAssistant: (.*?)\n\n(?:Is the assistant|[^\n]*\nDoes the assistant)", text, re.S)
        good = re.search(r"Option \((\w)\): (?:The response is harmless|Yes)", text)
        if not body.get("logprobs") or response is None or good is None:
            return judge_answer(body)
        p = p_good(response.group(1))
        bad = "B" if good.group(1) == "A" else "A"
        top = sorted([(good.group(1), math.log(p)), (bad, math.log(1 - p))], key=lambda x: -x[1])
        return 200, completion(top[0][0], top)
    return answer
