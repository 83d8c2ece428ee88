"""A local OpenAI-compatible chat-completions server for the caption tests (stdlib http.server in a thread).

It answers deterministic captions derived from the request (clip id header, number and mean grey level of the JPEG
frames, WAV length and rate), records every request, and can be told to fail a (clip, modality) with HTTP 500/429 a
number of times, to sleep past the client's timeout, or to answer slowly.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
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

    def __init__(self):
        self.requests: list[tuple[str, str]] = []  # (clip, modality) per chat request, failed ones included
        self.answered: list[tuple[str, str]] = []  # (clip, modality) per caption sent back
        self.bodies: dict[tuple[str, str], dict] = {}
        self.fail: dict[tuple[str, str], list] = {}  # key -> HTTP statuses to answer first, in order (-1 = forever 500)
        self.sleep: dict[tuple[str, str], int] = {}  # key -> how many first requests sleep `sleep_s`
        self.sleep_s = 1.0
        self.delay = 0.0  # seconds every answer takes
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

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                server._answer(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
                return handler._send(status, {"error": "planned failure"}, [("Retry-After", "0")] if status == 429 else [])
            if n < self.sleep.get(key, 0):
                time.sleep(self.sleep_s)
                return handler._send(200, {"error": "too late"})
            time.sleep(self.delay)
            answer = {"id": "x", "object": "chat.completion", "model": body["model"],
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": caption_for(clip, parts)},
                                   "finish_reason": "stop"}]}
            with self.lock:  # before sending: the client may finish its run as soon as the answer arrives
                self.answered.append(key)
            handler._send(200, answer)
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

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
