"""A minimal OpenAI-compatible chat-completions client (stdlib urllib only) with retries and a pre-flight check.

Retried: connection errors, timeouts, dropped connections, HTTP 408/429/5xx (a ``Retry-After`` header is honoured, up to
`max_backoff`), and answers that are not usable (a body that is not JSON, no ``choices``, an empty caption). Waits grow
exponentially with jitter: attempt k waits uniformly in [d/2, d] with d = min(max_backoff, backoff * 2**k). Other HTTP
errors (400: e.g. the served model takes no audio; 401; 404) are not retried. Every failure ends as a one-line
`CaptionError`. A `Breaker` passed to `call` sees every connection failure and every answer, and its stop signal cuts
backoff waits short (see `caeav.captions.breaker`).
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional

from caeav.errors import CaptionError

from .breaker import Breaker
from .prompts import caption_from_response

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
PREFLIGHT_TIMEOUT = 10.0  # seconds, at most, for the pre-flight request


class _Retry(Exception):
    """A transient failure: worth another attempt. `kind`: "connection" (the server was not reached), "status" (a
    retryable HTTP status) or "answer" (an answer that is not usable)."""

    def __init__(self, reason: str, wait: Optional[float] = None, kind: str = "status"):
        super().__init__(reason)
        self.wait = wait
        self.kind = kind

    @property
    def connection(self) -> bool:
        return self.kind == "connection"


class HTTPStatusError(CaptionError):
    """The server answered an HTTP error status that is not worth retrying."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


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
    """POSTs chat-completions bodies to one endpoint; thread-safe (no shared connection state).

    `sleep` replaces the backoff wait (tests); by default a wait is cut short when the run's `Breaker` stops."""

    def __init__(self, endpoint: str, timeout: float = 120.0, retries: int = 5, backoff: float = 1.0,
                 max_backoff: float = 60.0, api_key: Optional[str] = None,
                 sleep: Optional[Callable[[float], None]] = None, seed: Optional[int] = None):
        self.base = base_url(endpoint)
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.api_key = api_key
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def _request(self, path: str, body: Optional[dict], headers: Optional[dict], timeout: Optional[float] = None):
        """The decoded JSON answer; _Retry for transient failures, HTTPStatusError for the others."""
        timeout = self.timeout if timeout is None else timeout
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.base + path, data=data, method="GET" if body is None else "POST")
        req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if exc.code in RETRY_STATUS:
                raise _Retry(f"HTTP {exc.code}{detail}", _retry_after(exc)) from None
            raise HTTPStatusError(f"{self.base}{path} answered HTTP {exc.code}{detail}", exc.code) from None
        except urllib.error.URLError as exc:
            raise _Retry(f"cannot connect ({exc.reason})", kind="connection") from None
        except (socket.timeout, TimeoutError):
            raise _Retry(f"no answer within {timeout:g} s", kind="connection") from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise _Retry(f"connection failed ({type(exc).__name__}: {exc})", kind="connection") from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retry(f"answered with something that is not JSON: {raw[:80]!r}", kind="answer") from None

    def _pause(self, attempt: int, exc: _Retry, guard: Optional[Breaker]) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** attempt)
        with self._rng_lock:
            jitter = self._rng.uniform(delay / 2, delay)
        wait = min(exc.wait if exc.wait is not None else jitter, self.max_backoff)
        if self._sleep is not None:
            self._sleep(wait)
        elif guard is not None:
            guard.wait(wait)
        else:
            time.sleep(wait)

    def call(self, path: str, body: Optional[dict] = None, headers: Optional[dict] = None,
             parse: Optional[Callable[[dict], object]] = None,
             guard: Optional[Breaker] = None) -> tuple[object, float, int]:
        """(answer, seconds of the successful attempt, attempts used); CaptionError when retries run out.

        `parse` turns the JSON answer into the result; a CaptionError it raises is retried like a transient failure.
        With a `guard`, `Cancelled` as soon as the run stops."""
        last = ""
        for attempt in range(self.retries + 1):
            if guard is not None:
                guard.check()
            start = time.monotonic()
            try:
                answer = self._request(path, body, headers)
                if guard is not None:
                    guard.reached()
                try:
                    result = answer if parse is None else parse(answer)
                except CaptionError as exc:
                    raise _Retry(str(exc), kind="answer") from None
                return result, time.monotonic() - start, attempt + 1
            except _Retry as exc:
                last = str(exc)
                if guard is not None:
                    if exc.connection:
                        guard.connection_failed(last)
                    else:
                        guard.reached()
                if attempt == self.retries:
                    break
                self._pause(attempt, exc, guard)
            except HTTPStatusError:
                if guard is not None:
                    guard.reached()
                raise
        raise CaptionError(f"{self.base}{path}: no answer after {self.retries + 1} attempt(s) (last: {last})")

    def complete(self, body: dict, headers: Optional[dict] = None, guard: Optional[Breaker] = None) -> Completion:
        """One chat completion → its caption text (an answer without one is retried)."""
        text, latency, attempts = self.call("/chat/completions", body, headers, parse=_caption_text, guard=guard)
        return Completion(text, latency, attempts)

    def models(self) -> list[str]:
        """Ids of the served models (GET /v1/models)."""
        answer, _, _ = self.call("/models")
        ids = _model_ids(answer)
        if ids is None:
            raise CaptionError(f"{self.base}/models: unexpected answer {str(answer)[:120]}")
        return ids

    def preflight(self, model: Optional[str] = None) -> Optional[list[str]]:
        """One quick request before a run: the served model ids, or None for a server that lists none but does serve
        chat completions. One-line CaptionError when the endpoint is unreachable or not an OpenAI-compatible server."""
        timeout = min(self.timeout, PREFLIGHT_TIMEOUT)
        not_openai = f"{self.base} is not an OpenAI-compatible server"
        try:
            try:
                answer = self._request("/models", None, None, timeout)
            except _Retry as exc:
                if exc.kind != "status":
                    raise
                self._pause(0, exc, None)  # a server that is up but busy (429, 5xx) gets a second try
                answer = self._request("/models", None, None, timeout)
        except _Retry as exc:
            if exc.kind == "connection":
                raise CaptionError(f"caption endpoint {self.base} is unreachable: {exc}; start the server or "
                                   "fix --endpoint") from None
            if exc.kind == "answer":
                raise CaptionError(f"{not_openai}: GET {self.base}/models {exc}") from None
            raise CaptionError(f"caption endpoint {self.base} is not ready: GET /models answered {exc}") from None
        except HTTPStatusError as exc:
            if exc.code in (404, 405):
                return self._probe_chat(model, timeout, not_openai, exc)
            hint = " (check --api-key)" if exc.code in (401, 403) else ""
            raise CaptionError(f"{exc}{hint}") from None
        ids = _model_ids(answer)
        if ids is None:
            raise CaptionError(f"{not_openai}: GET {self.base}/models answered JSON without a model list: "
                               f"{str(answer)[:80]}")
        return ids

    def _probe_chat(self, model, timeout, not_openai: str, first: HTTPStatusError) -> None:
        """No model list: does the chat-completions route exist? (an empty request: 400/422 from a real server)"""
        try:
            self._request("/chat/completions", {"model": model or "", "messages": [], "max_tokens": 1}, None, timeout)
        except _Retry as exc:
            if exc.connection:
                raise CaptionError(f"caption endpoint {self.base} is unreachable: {exc}") from None
        except HTTPStatusError as exc:
            if exc.code in (404, 405):
                raise CaptionError(f"{not_openai}: {first} and POST /chat/completions answered HTTP {exc.code}"
                                   ) from None
        return None


def _caption_text(answer) -> str:
    text = caption_from_response(answer)
    if not text:
        raise CaptionError("the endpoint answered an empty caption")
    return text


def _model_ids(answer) -> Optional[list[str]]:
    try:
        ids = [m["id"] for m in answer["data"]]
    except (KeyError, TypeError):
        return None
    return ids if all(isinstance(i, str) for i in ids) else None


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
