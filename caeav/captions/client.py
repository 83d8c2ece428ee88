"""A minimal OpenAI-compatible chat-completions client (stdlib urllib only) with retries.

Retried: connection errors, timeouts, dropped connections, HTTP 408/429/5xx (a ``Retry-After`` header is honoured, up to
`max_backoff`). Waits grow exponentially with jitter: attempt k waits uniformly in [d/2, d] with
d = min(max_backoff, backoff * 2**k). Other HTTP errors (400: e.g. the served model takes no audio; 401; 404) are not
retried. Every failure ends as a one-line `CaptionError`.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional

from caeav.errors import CaptionError

from .prompts import caption_from_response

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class _Retry(Exception):
    """A transient failure: worth another attempt."""

    def __init__(self, reason: str, wait: Optional[float] = None):
        super().__init__(reason)
        self.wait = wait


def base_url(endpoint: str) -> str:
    """`http://host:8000`, `.../v1` or `.../v1/chat/completions` → `http://host:8000/v1`."""
    url = endpoint.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CaptionError(f"endpoint {endpoint!r} is not an http(s) URL (e.g. http://localhost:8000/v1)")
    if url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    return url if url.endswith("/v1") else url + "/v1"


@dataclass
class Completion:
    text: str
    latency_s: float  # of the successful attempt
    attempts: int


class ChatClient:
    """POSTs chat-completions bodies to one endpoint; thread-safe (no shared connection state)."""

    def __init__(self, endpoint: str, timeout: float = 120.0, retries: int = 5, backoff: float = 1.0,
                 max_backoff: float = 60.0, api_key: Optional[str] = None,
                 sleep: Callable[[float], None] = time.sleep, seed: Optional[int] = None):
        self.base = base_url(endpoint)
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.api_key = api_key
        self._sleep = sleep
        self._rng = random.Random(seed)

    def _request(self, path: str, body: Optional[dict], headers: Optional[dict]) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.base + path, data=data, method="GET" if body is None else "POST")
        req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if exc.code in RETRY_STATUS:
                raise _Retry(f"HTTP {exc.code}{detail}", _retry_after(exc)) from None
            raise CaptionError(f"{self.base}{path} answered HTTP {exc.code}{detail}") from None
        except urllib.error.URLError as exc:
            raise _Retry(f"cannot connect ({exc.reason})") from None
        except (socket.timeout, TimeoutError):
            raise _Retry(f"no answer within {self.timeout:g} s") from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise _Retry(f"connection failed ({type(exc).__name__}: {exc})") from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CaptionError(f"{self.base}{path} answered with something that is not JSON: {raw[:120]!r}") from None

    def call(self, path: str, body: Optional[dict] = None, headers: Optional[dict] = None) -> tuple[dict, float, int]:
        """(JSON answer, seconds of the successful attempt, attempts used); CaptionError when retries run out."""
        last = ""
        for attempt in range(self.retries + 1):
            start = time.monotonic()
            try:
                return self._request(path, body, headers), time.monotonic() - start, attempt + 1
            except _Retry as exc:
                last = str(exc)
                if attempt == self.retries:
                    break
                delay = min(self.max_backoff, self.backoff * 2 ** attempt)
                wait = exc.wait if exc.wait is not None else self._rng.uniform(delay / 2, delay)
                self._sleep(min(wait, self.max_backoff))
        raise CaptionError(f"{self.base}{path}: no answer after {self.retries + 1} attempt(s) (last: {last})")

    def complete(self, body: dict, headers: Optional[dict] = None) -> Completion:
        """One chat completion → its caption text."""
        answer, latency, attempts = self.call("/chat/completions", body, headers)
        return Completion(caption_from_response(answer), latency, attempts)

    def models(self) -> list[str]:
        """Ids of the served models (GET /v1/models)."""
        answer, _, _ = self.call("/models")
        try:
            return [m["id"] for m in answer["data"]]
        except (KeyError, TypeError):
            raise CaptionError(f"{self.base}/models: unexpected answer {str(answer)[:120]}") from None


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(300).decode("utf-8", "replace")
    except Exception:  # the body is only a courtesy for the message
        text = ""
    text = " ".join(text.split())
    return f": {text[:200]}" if text else ""


def _retry_after(exc: urllib.error.HTTPError) -> Optional[float]:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
