"""A local OpenAI-compatible chat-completions server for the caption tests (stdlib http.server in a thread).

It answers deterministic captions derived from the request (clip id header, number and mean grey level of the JPEG
frames, WAV length and rate), records every request, and can be told to fail a (clip, modality) with HTTP 500/429 or a
garbage answer (a body that is not JSON, no `choices`) a number of times, to sleep past the client's timeout, to answer
slowly, to hang every request after the first few answers, or to go away (stop listening) after a number of answers.
Every wait ends when the server is closed, so a test never waits on it.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.parse
import wave
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

MODEL = "test-omni"


def decode_parts(body: dict) -> dict:
    """What the request carries: the modality, the frames (uint8 arrays, in order), the WAV (samples, rate), the text."""
    content = body["messages"][-1]["content"]
    out = {"frames": [], "audio": None, "text": None, "kinds": [p["type"] for p in content]}
    for part in content:
        if part["type"] == "image_url":
            url = part["image_url"]["url"]
            assert url.startswith("data:image/jpeg;base64,")
            out["frames"].append(np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))))
        elif part["type"] == "input_audio":
            assert part["input_audio"]["format"] == "wav"
            with wave.open(io.BytesIO(base64.b64decode(part["input_audio"]["data"]))) as wav:
                pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
                out["audio"] = (pcm, wav.getframerate(), wav.getnchannels(), wav.getsampwidth())
        elif part["type"] == "text":
            out["text"] = part["text"]
    out["modality"] = "visual" if out["frames"] else "audio"
    return out


def caption_for(clip: str, parts: dict) -> str:
    if parts["modality"] == "visual":
        levels = "-".join(str(int(round(f.mean()))) for f in parts["frames"])
        return f"{clip} visual: {len(parts['frames'])} frames, levels {levels}"
    pcm, rate, _, _ = parts["audio"]
    return f"{clip} audio: {len(pcm) / rate:g} s at {rate} Hz"


class CaptionServer:
    """`with CaptionServer() as srv:` → `srv.url` (ends in /v1). Set `fail`, `sleep`, `delay` before requests."""

    def __init__(self, port: int = 0):
        self.requests: list[tuple[str, str]] = []  # (clip, modality) per chat request, failed ones included
        self.answered: list[tuple[str, str]] = []  # (clip, modality) per caption sent back
        self.bodies: dict[tuple[str, str], dict] = {}
        # key -> what to answer first, in order: an HTTP status, "garbage" (200, not JSON) or "empty" (200, no
        # choices); [-1] = HTTP 500 forever
        self.fail: dict[tuple[str, str], list] = {}
        self.sleep: dict[tuple[str, str], int] = {}  # key -> how many first requests sleep `sleep_s`
        self.sleep_s = 1.0
        self.delay = 0.0  # seconds every answer takes
        self.hang_after = None  # after this many answers, every chat request hangs `hang_s` (then answers 503)
        self.hang_s = 60.0
        self.die_after = None  # after this many answers the server stops listening: connections are refused
        self.closed = threading.Event()
        self.models_status = 200  # of GET /v1/models
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: dict, headers=()):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers:
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send_raw(self, status: int, data: bytes):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                if server.models_status != 200:
                    self._send(server.models_status, {"error": "planned"})
                elif self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                server._answer(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _answer(self, handler, body: dict) -> None:
        clip = urllib.parse.unquote(handler.headers.get("X-Caeav-Clip", "?"))
        parts = decode_parts(body)
        key = (clip, parts["modality"])
        assert handler.headers.get("X-Caeav-Modality") == parts["modality"]
        with self.lock:
            n = sum(1 for k in self.requests if k == key)
            self.requests.append(key)
            self.bodies[key] = body
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            plan = self.fail.get(key, [])
            if plan and (plan[0] == -1 or n < len(plan)):
                status = 500 if plan[0] == -1 else plan[n]
                if status == "garbage":
                    return handler._send_raw(200, b"<html>upstream hiccup</html>")
                if status == "empty":
                    return handler._send(200, {"id": "x", "object": "chat.completion", "choices": []})
                return handler._send(status, {"error": "planned failure"}, [("Retry-After", "0")] if status == 429 else [])
            if n < self.sleep.get(key, 0):
                self.closed.wait(self.sleep_s)
                return handler._send(200, {"error": "too late"})
            if self.hang_after is not None and len(self.answered) >= self.hang_after:
                self.closed.wait(self.hang_s)
                return handler._send(503, {"error": "hung"})
            self.closed.wait(self.delay)
            answer = {"id": "x", "object": "chat.completion", "model": body["model"],
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": caption_for(clip, parts)},
                                   "finish_reason": "stop"}]}
            with self.lock:  # before sending: the client may finish its run as soon as the answer arrives
                self.answered.append(key)
                dying = self.die_after is not None and len(self.answered) >= self.die_after
            handler._send(200, answer)
            if dying:
                threading.Thread(target=self.close, daemon=True).start()
        finally:
            with self.lock:
                self.in_flight -= 1

    def counts(self) -> Counter:
        with self.lock:
            return Counter(self.requests)

    def answers(self) -> Counter:
        with self.lock:
            return Counter(self.answered)

    def __enter__(self) -> "CaptionServer":
        self.thread.start()
        return self

    def close(self) -> None:
        """Stop listening (idempotent): later connections are refused; waiting handlers end at once."""
        with self.lock:
            if self.closed.is_set():
                return
            self.closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __exit__(self, *exc) -> None:
        self.close()


class PlainServer:
    """A loopback HTTP server that is not an OpenAI-compatible one: every request gets `status` and an HTML page."""

    def __init__(self, status: int = 200):
        self.hits: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _page(self):
                owner.hits.append(f"{self.command} {self.path}")
                data = b"<html><body>hello</body></html>"
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _page

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "PlainServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
