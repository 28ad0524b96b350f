"""Preference labels from a vision-language model behind an OpenAI-compatible chat-completions
endpoint (OpenAI, or vLLM / Ollama / any server speaking the same API).

Each query costs two requests, RL-VLM-F's two stages (see :mod:`prompt`): an *analysis* request
with both images as base64 data URLs in ``image_url`` content parts
(https://platform.openai.com/docs/guides/images-vision), and a text-only *labelling* request
carrying that analysis. The reply of the second is read by :func:`parse.parse_label`; an
unparseable reply is -1 and counted.

Settings come from :class:`VLMConfig`, with the environment as fallback: ``OPENAI_BASE_URL``,
``OPENAI_API_KEY`` (the names OpenAI's own client reads) and ``TETHER_VLM_MODEL``.

Being a good client: queries run on a thread pool (``concurrency``); every HTTP request first
takes a token from a token bucket (``requests_per_minute``); requests time out
(``timeout_s``); timeouts, connection errors, 408/409/429 and 5xx are retried with exponential
backoff and full jitter (Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015),
never sooner than a ``Retry-After`` header asks (RFC 9110 Sec. 10.2.3). Other 4xx (bad key, unknown
model) are configuration errors and stop the run at once with :class:`VLMError`.
"""

from __future__ import annotations

import base64
import email.utils
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tether.perception.labellers.base import (
    LabelError, OnAnswer, PreferenceAnswer, PreferenceQuery, UNSURE,
)
from tether.perception.labellers.parse import label_or_unsure
from tether.perception.labellers.prompt import (
    ANALYSIS_INTRO, IMAGE_1, IMAGE_2, analysis_questions, label_prompt, prompt_key,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = frozenset({408, 409, 429})


class VLMError(RuntimeError):
    """The endpoint refused the request in a way retrying cannot fix (401 bad key, 404 unknown
    model or URL, 400 bad request), or the configuration is incomplete (no model name)."""


class RetriesExhausted(RuntimeError):
    """A request still failed (timeout, 429, 5xx, connection error) after all retries."""


@dataclass
class VLMConfig:
    """Settings of :class:`VLMLabeller` (None: from the environment, see the module docstring)."""

    base_url: str | None = None
    """Endpoint root, e.g. https://api.openai.com/v1 or http://localhost:8000/v1 (vLLM);
    default $OPENAI_BASE_URL, else https://api.openai.com/v1."""
    model: str | None = None
    """Model name as the endpoint knows it; default $TETHER_VLM_MODEL."""
    api_key: str | None = None
    """Bearer token; default $OPENAI_API_KEY (none is sent when neither is set, as local servers
    need none)."""
    timeout_s: float = 60.0
    """Per-request timeout (connect, read and write), seconds."""
    max_retries: int = 5
    """Retries of one request after the first attempt."""
    backoff_s: float = 1.0
    """Backoff cap of the first retry, seconds; doubles each retry (full jitter below it)."""
    backoff_max_s: float = 60.0
    """Largest backoff cap, seconds."""
    max_retry_after_s: float = 300.0
    """Longest Retry-After honoured, seconds (a longer one is shortened to this)."""
    requests_per_minute: float = 60.0
    """Token-bucket rate of HTTP requests (two per query), retries included; 0: unlimited."""
    burst: int = 1
    """Token-bucket capacity: requests that may go out back to back after a quiet spell."""
    concurrency: int = 4
    """Queries in flight at once."""
    image_format: Literal["png", "jpeg"] = "png"
    """Encoding of the images sent (PNG is lossless; JPEG is smaller for large images)."""
    jpeg_quality: int = 90
    max_tokens_analysis: int = 512
    """Completion-token limit of the analysis reply."""
    max_tokens_label: int = 16
    """Completion-token limit of the label reply."""
    temperature: float = 0.0

    def resolved(self) -> "VLMConfig":
        """A copy with environment fallbacks filled in and values checked.

        Raises:
            VLMError: no model name anywhere.
            LabelError: a non-positive timeout or concurrency, negative retries or rate.
        """
        base_url = (self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        model = self.model or os.environ.get("TETHER_VLM_MODEL")
        if not model:
            raise VLMError("no VLM model name: pass --model or set TETHER_VLM_MODEL")
        if self.timeout_s <= 0 or self.concurrency < 1 or self.burst < 1:
            raise LabelError("timeout_s must be > 0, concurrency and burst >= 1")
        if self.max_retries < 0 or self.requests_per_minute < 0 or self.backoff_s < 0:
            raise LabelError("max_retries, requests_per_minute and backoff_s must be >= 0")
        out = VLMConfig(**{**self.__dict__, "base_url": base_url, "model": model})
        out.api_key = self.api_key or os.environ.get("OPENAI_API_KEY") or None
        return out


class TokenBucket:
    """A thread-safe token bucket: ``rate_per_s`` tokens a second, at most ``capacity`` saved.

    :meth:`acquire` reserves a token and sleeps until it exists, so waiting callers are served in
    arrival order at exactly the rate (a few lines; a dependency would be larger than this).
    """

    def __init__(self, rate_per_s: float, capacity: int = 1,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if rate_per_s < 0 or capacity < 1:
            raise LabelError(f"token bucket needs rate >= 0 and capacity >= 1, got {rate_per_s}, {capacity}")
        self.rate, self.capacity = rate_per_s, capacity
        self._clock, self._sleep = clock, sleep
        self._tokens = float(capacity)
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until it is available; returns the seconds slept."""
        if self.rate == 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0  # may go negative: a reservation for a later instant
            wait_s = max(0.0, -self._tokens / self.rate)
        if wait_s > 0:
            self._sleep(wait_s)
        return wait_s


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110
    Sec. 10.2.3); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def image_data_url(image: np.ndarray, fmt: str = "png", jpeg_quality: int = 90) -> str:
    """uint8 [H, W, 3] RGB -> ``data:image/png;base64,...`` (or JPEG), as OpenAI's vision input
    accepts in an ``image_url`` part.

    Raises:
        LabelError: an unknown format, or the encoder failed.
    """
    import cv2

    bgr = np.ascontiguousarray(image[..., ::-1])
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr)
    elif fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        raise LabelError(f"image format must be png or jpeg, got {fmt!r}")
    if not ok:
        raise LabelError(f"could not encode a {image.shape} image as {fmt}")
    return f"data:image/{fmt};base64,{base64.b64encode(buf.tobytes()).decode('ascii')}"


@dataclass
class ChatReply:
    """One chat completion: the message text (None when the endpoint sent none), token usage,
    and HTTP requests it took (retries included)."""

    text: str | None
    prompt_tokens: int
    completion_tokens: int
    requests: int


class ChatClient:
    """``POST {base_url}/chat/completions`` with rate limit, timeout and retries (see the module
    docstring). Thread-safe: one instance serves the whole thread pool.

    Args:
        config: a resolved :class:`VLMConfig` (see :meth:`VLMConfig.resolved`).
        sleep: how to wait between retries (tests pass a recorder).
        rng: jitter source.
    """

    def __init__(self, config: VLMConfig, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None):
        import httpx

        self.config = config
        self._httpx = httpx
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = httpx.Client(
            base_url=config.base_url, headers=headers, timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(max_connections=config.concurrency),
        )
        self._bucket = TokenBucket(config.requests_per_minute / 60.0, config.burst)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.requests = 0
        self.retries = 0

    def close(self) -> None:
        self._http.close()

    def backoff_s(self, retry: int, retry_after: float | None) -> float:
        """Wait before retry number ``retry`` (0-based): uniform in [0, min(max, base * 2^retry)],
        but at least ``retry_after`` (capped at ``max_retry_after_s``)."""
        cap = min(self.config.backoff_max_s, self.config.backoff_s * 2.0 ** retry)
        with self._rng_lock:
            delay = self._rng.uniform(0.0, cap)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.config.max_retry_after_s))
        return delay

    def chat(self, messages: list[dict], max_tokens: int) -> ChatReply:
        """One chat completion for ``messages`` (OpenAI chat format).

        Raises:
            VLMError: a non-retryable status (e.g. 400, 401, 403, 404).
            RetriesExhausted: every attempt timed out or got a retryable failure.
        """
        httpx = self._httpx
        payload = {"model": self.config.model, "messages": messages, "max_tokens": max_tokens,
                   "temperature": self.config.temperature}
        requests = 0
        for attempt in range(self.config.max_retries + 1):
            self._bucket.acquire()
            requests += 1
            with self._count_lock:
                self.requests += 1
            retry_after = None
            try:
                response = self._http.post("/chat/completions", json=payload)
            except httpx.TimeoutException:
                reason = f"no reply within {self.config.timeout_s} s"
            except httpx.TransportError as e:
                reason = f"{type(e).__name__}: {e}"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        body = response.json()
                        message = body["choices"][0]["message"]
                        usage = body.get("usage") or {}
                        return ChatReply(message.get("content"), int(usage.get("prompt_tokens") or 0),
                                         int(usage.get("completion_tokens") or 0), requests)
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                        reason = f"200 with a body that is not a chat completion: {response.text[:200]!r}"
                elif status in RETRYABLE_STATUS or status >= 500:
                    reason = f"HTTP {status}"
                    retry_after = retry_after_s(response.headers.get("retry-after"))
                else:
                    raise VLMError(
                        f"{self.config.base_url}/chat/completions answered HTTP {status} "
                        f"(model {self.config.model!r}): {response.text[:300]}"
                    )
            if attempt == self.config.max_retries:
                raise RetriesExhausted(f"{reason} (after {requests} attempts)")
            with self._count_lock:
                self.retries += 1
            self._sleep(self.backoff_s(attempt, retry_after))
        raise AssertionError("unreachable")


class VLMLabeller:
    """RL-VLM-F preference labels from an OpenAI-compatible VLM (see the module docstring).

    Labels: 0 = the first image better achieves the task, 1 = the second, -1 = no difference,
    unsure, or an unparseable reply (``parse_failed``). A query whose requests all failed gets
    -1 with ``error`` set, which a :class:`~tether.perception.labellers.store.LabelStore` does
    not keep, so the next run asks again.

    Args:
        config: settings; resolved against the environment here.
        client: a ready :class:`ChatClient` (tests); default: one built from ``config``.

    Raises:
        VLMError: no model name (here), or a non-retryable HTTP status (from :meth:`label`).
    """

    name = "vlm"

    def __init__(self, config: VLMConfig | None = None, client: ChatClient | None = None):
        self.config = (config or VLMConfig()).resolved()
        self.client = client or ChatClient(self.config)
        self.model = f"vlm:{self.config.model}"

    def close(self) -> None:
        self.client.close()

    def key_text(self, query: PreferenceQuery) -> str:
        return prompt_key(query.task)

    def _image(self, image: np.ndarray) -> dict:
        url = image_data_url(image, self.config.image_format, self.config.jpeg_quality)
        return {"type": "image_url", "image_url": {"url": url}}

    def answer(self, query: PreferenceQuery) -> PreferenceAnswer:
        """Both stages for one query (blocking)."""
        content = [
            {"type": "text", "text": ANALYSIS_INTRO},
            {"type": "text", "text": IMAGE_1}, self._image(query.first),
            {"type": "text", "text": IMAGE_2}, self._image(query.second),
            {"type": "text", "text": analysis_questions(query.task)},
        ]
        try:
            analysis = self.client.chat([{"role": "user", "content": content}],
                                        self.config.max_tokens_analysis)
            reply = self.client.chat(
                [{"role": "user", "content": label_prompt(query.task, analysis.text or "")}],
                self.config.max_tokens_label,
            )
        except RetriesExhausted as e:
            return PreferenceAnswer(UNSURE, error=str(e))
        label, failed = label_or_unsure(reply.text)
        return PreferenceAnswer(
            label, text=f"{analysis.text or ''}\n---\n{reply.text or ''}", parse_failed=failed,
            prompt_tokens=analysis.prompt_tokens + reply.prompt_tokens,
            completion_tokens=analysis.completion_tokens + reply.completion_tokens,
            requests=analysis.requests + reply.requests,
        )

    def label(self, queries: Sequence[PreferenceQuery], on_answer: OnAnswer | None = None
              ) -> list[PreferenceAnswer]:
        """Answer ``queries`` on ``concurrency`` threads; ``on_answer`` runs in the calling thread
        as each answer arrives. Returns answers in query order.

        Raises:
            VLMError: the endpoint refused a request for good (pending queries are cancelled).
        """
        answers: list[PreferenceAnswer | None] = [None] * len(queries)
        pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="vlm")
        try:
            pending = {pool.submit(self.answer, q): i for i, q in enumerate(queries)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                error: BaseException | None = None
                for future in done:
                    i = pending.pop(future)
                    if future.exception() is not None:
                        error = error or future.exception()
                        continue
                    answers[i] = future.result()
                    if on_answer is not None:
                        on_answer(i, answers[i])
                if error is not None:  # after handing over the answers that did arrive
                    raise error
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return answers  # type: ignore[return-value]
