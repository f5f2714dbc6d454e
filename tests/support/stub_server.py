"""A small OpenAI-compatible HTTP server for tests of the server pool: it batches, overloads and dies on cue.

`StubServer(answer)` serves POST /v1/chat/completions with `answer(server, body) -> (status, payload)`
and GET /v1/models with one model. `kill()` stops it the way a crashed server stops: requests in flight get
no answer (the connection closes) and new connections are refused; `start()` brings it back on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Listener(ThreadingHTTPServer):
    request_queue_size = 1024           # a burst of connections is queued, not reset
    daemon_threads = True


def chat_answer(text: str, completion_tokens: int = 10) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": completion_tokens}}


class StubServer:
    def __init__(self, answer, model: str = "m"):
        self.answer, self.model = answer, model
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = self.served = self.refused = 0
        self.dead = False
        self.port = 0
        self._http: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "StubServer":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if stub.dead:
                    self.close_connection = True
                    return
                stub._reply(self, 200, {"object": "list", "data": [{"id": stub.model, "max_model_len": 4096}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.in_flight += 1
                    stub.most_in_flight = max(stub.most_in_flight, stub.in_flight)
                try:
                    status, payload = stub.answer(stub, body)
                finally:
                    with stub.lock:
                        stub.in_flight -= 1
                if stub.dead:                          # crashed while working on it: no answer at all
                    self.close_connection = True
                    return
                with stub.lock:
                    stub.served += status == 200
                    stub.refused += status != 200
                stub._reply(self, status, payload)

            def log_message(self, *args):
                pass

        self.dead = False
        self._http = _Listener(("127.0.0.1", self.port), Handler)
        self.port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def kill(self) -> None:
        self.dead = True
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    @staticmethod
    def _reply(handler, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def batching(knee: int, seconds: float):
    """Answers like a batching server: up to `knee` requests at once take `seconds`; past it, proportionally longer
    (throughput stops growing). The answer echoes the last message."""

    def answer(stub: StubServer, body: dict):
        with stub.lock:
            load = stub.in_flight
        time.sleep(seconds * max(1.0, load / knee))
        return 200, chat_answer(body["messages"][-1]["content"])

    return answer


def overloading(capacity: int, seconds: float):
    """Answers 429 to a request that arrives while `capacity` are already being worked on."""

    def answer(stub: StubServer, body: dict):
        with stub.lock:
            load = stub.in_flight
        if load > capacity:
            return 429, {"error": {"message": "too many requests"}}
        time.sleep(seconds)
        return 200, chat_answer(body["messages"][-1]["content"])

    return answer
