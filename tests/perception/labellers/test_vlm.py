"""The VLM labeller against a real HTTP server on loopback: two-stage requests, parsing,
retries, timeouts, Retry-After, rate limit, configuration errors, and the label store."""

from __future__ import annotations

import base64
import email.utils
import random
import time

import cv2
import numpy as np
import pytest

from tether.perception.labellers import (
    LabelStore, PreferenceQuery, Prices, VLMConfig, VLMError, VLMLabeller, parse_label,
)
from tether.perception.labellers.vlm import ChatClient, TokenBucket, retry_after_s


def image(level: int, shape=(8, 10, 3)) -> np.ndarray:
    rng = np.random.default_rng(level)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def queries(n: int, task: str = "open the drawer", offset: int = 0) -> list[PreferenceQuery]:
    return [PreferenceQuery(image(2 * i + offset), image(2 * i + 1 + offset), task) for i in range(n)]


def labeller(fake_vlm, sleeps: list | None = None, **overrides) -> VLMLabeller:
    settings = dict(base_url=fake_vlm.url, model="fake-vlm", requests_per_minute=0, backoff_s=0.01,
                    timeout_s=5.0, concurrency=2)
    settings.update(overrides)
    config = VLMConfig(**settings).resolved()
    client = ChatClient(config, sleep=sleeps.append if sleeps is not None else time.sleep,
                        rng=random.Random(0))
    return VLMLabeller(config, client=client)


def test_two_stage_requests_carry_images_task_analysis_and_key(fake_vlm, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    vlm = labeller(fake_vlm)
    qs = queries(3)
    answers = vlm.label(qs)
    assert [a.label for a in answers] == [1, 1, 1]
    assert all(a.requests == 2 and a.prompt_tokens == 200 and a.completion_tokens == 20 for a in answers)
    assert len(fake_vlm.requests) == 6
    _, headers, analysis = next(r for r in fake_vlm.requests if isinstance(r[2]["messages"][0]["content"], list))
    assert headers["Authorization"] == "Bearer sk-test"
    assert analysis["model"] == "fake-vlm" and analysis["temperature"] == 0.0
    parts = analysis["messages"][0]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == 2 and all(u.startswith("data:image/png;base64,") for u in urls)
    decoded = [cv2.imdecode(np.frombuffer(base64.b64decode(u.split(",", 1)[1]), np.uint8),
                            cv2.IMREAD_COLOR)[..., ::-1] for u in urls]
    sent = {(d.tobytes()) for d in decoded}
    assert any({q.first.tobytes(), q.second.tobytes()} == sent for q in qs)  # lossless, RGB order
    texts = " ".join(p["text"] for p in parts if p["type"] == "text")
    assert "Image 1:" in texts and "Image 2:" in texts and "The goal is: open the drawer." in texts
    label_prompt = fake_vlm.label_requests()[0]["messages"][0]["content"]
    assert "in Image 2 it touches the handle" in label_prompt and "-1" in label_prompt


def test_malformed_answers_become_unsure_and_are_counted(fake_vlm, tmp_path):
    fake_vlm.replies = {"a": "0", "b": "**1**.", "c": "Image 1 is better", "d": None,
                        "e": "0\n1", "f": "Answer: -1", "g": "2"}
    qs = [PreferenceQuery(image(i), image(i + 100), task) for i, task in enumerate("abcdefg")]
    with LabelStore(tmp_path / "labels.sqlite") as store:
        labels, report = store.label(labeller(fake_vlm), qs)
    assert labels.tolist() == [0, 1, -1, -1, -1, -1, -1]
    assert report.parse_failures == 4 and report.abstentions == 5 and report.calls == 7


def test_not_json_and_500_are_retried_then_succeed(fake_vlm):
    fake_vlm.faults.extend(["500", "not-json"])
    sleeps: list[float] = []
    vlm = labeller(fake_vlm, sleeps, concurrency=1)
    [answer] = vlm.label(queries(1))
    assert answer.label == 1 and answer.error is None and answer.requests == 4
    assert vlm.client.retries == 2 and len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.01 and 0 <= sleeps[1] <= 0.02  # full jitter under base * 2^retry


def test_429_honours_retry_after(fake_vlm):
    fake_vlm.faults.append("429")
    fake_vlm.retry_after = "7"
    sleeps: list[float] = []
    [answer] = labeller(fake_vlm, sleeps, concurrency=1).label(queries(1))
    assert answer.label == 1 and sleeps == [7.0]


def test_retry_after_forms():
    assert retry_after_s("3") == 3.0 and retry_after_s(None) is None and retry_after_s("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_s(later) <= 31


def test_backoff_grows_exponentially_with_a_cap(fake_vlm):
    client = labeller(fake_vlm, backoff_s=1.0, backoff_max_s=8.0).client
    for retry, cap in [(0, 1), (1, 2), (2, 4), (3, 8), (6, 8)]:
        draws = [client.backoff_s(retry, None) for _ in range(200)]
        assert 0 <= min(draws) and max(draws) <= cap and max(draws) > 0.7 * cap


def test_slow_reply_times_out_and_is_retried(fake_vlm):
    fake_vlm.faults.append("slow")
    vlm = labeller(fake_vlm, timeout_s=0.3, concurrency=1)
    start = time.monotonic()
    [answer] = vlm.label(queries(1))
    assert answer.label == 1 and vlm.client.retries == 1
    assert time.monotonic() - start < fake_vlm.slow_s  # gave up on the slow reply, did not wait it out


def test_exhausted_retries_fail_the_query_which_is_not_stored(fake_vlm, tmp_path):
    fake_vlm.faults.extend(["500", "500"])
    qs = queries(1)
    with LabelStore(tmp_path / "labels.sqlite") as store:
        labels, report = store.label(labeller(fake_vlm, max_retries=1, concurrency=1), qs)
        assert labels.tolist() == [-1] and report.failures == 1 and report.abstentions == 0
        assert len(store) == 0
        labels, report = store.label(labeller(fake_vlm, max_retries=1, concurrency=1), qs)
        assert labels.tolist() == [1] and report.calls == 1 and report.failures == 0


def test_unauthorized_is_a_configuration_error(fake_vlm):
    fake_vlm.faults.append("401")
    with pytest.raises(VLMError, match="HTTP 401.*invalid api key"):
        labeller(fake_vlm, concurrency=1).label(queries(2))


def test_missing_model_name_is_a_configuration_error(monkeypatch):
    monkeypatch.delenv("TETHER_VLM_MODEL", raising=False)
    with pytest.raises(VLMError, match="--model"):
        VLMConfig(base_url="http://127.0.0.1:9/v1").resolved()


def test_rate_limit_spaces_requests_at_the_server(fake_vlm):
    rpm = 600.0  # one request every 0.1 s
    vlm = labeller(fake_vlm, requests_per_minute=rpm, concurrency=4)
    start = time.monotonic()  # the server records arrivals on the same clock (same process)
    vlm.label(queries(3))
    times = np.array(sorted(t for t, _, _ in fake_vlm.requests)) - start
    assert len(times) == 6
    # request k may not arrive before its token exists; scheduling delays only make it later
    assert (times >= 0.1 * np.arange(6) - 0.005).all(), times
    assert times[-1] < 0.5 + 1.0  # and the limiter does not stall either


def test_token_bucket_allows_a_burst_then_the_rate():
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s):
        sleeps.append(s)
        now[0] += s

    bucket = TokenBucket(2.0, capacity=3, clock=lambda: now[0], sleep=sleep)
    waits = [bucket.acquire() for _ in range(5)]
    assert waits[:3] == [0, 0, 0] and waits[3] == pytest.approx(0.5) and waits[4] == pytest.approx(0.5)


def test_store_never_pays_twice_across_reopen(fake_vlm, tmp_path):
    qs = queries(4)
    path = tmp_path / "labels.sqlite"
    with LabelStore(path, Prices(input_per_1k=1.0, output_per_1k=2.0)) as store:
        labels, report = store.label(labeller(fake_vlm), qs)
    assert report.calls == 4 and report.cache_hits == 0 and report.requests == 8
    assert report.cost == pytest.approx((800 * 1.0 + 80 * 2.0) / 1000)
    with LabelStore(path) as store:
        again, report = store.label(labeller(fake_vlm), qs + qs[:1])  # a repeat in the batch too
    assert report.calls == 0 and report.cache_hits == 5 and report.requests == 0
    assert again[:4].tolist() == labels.tolist() and len(fake_vlm.requests) == 8
    # progress counts the stored answers at once, then each new one (a repeat with its first)
    done: list[int] = []
    with LabelStore(path) as store:
        store.label(labeller(fake_vlm, concurrency=1), qs[:2] + queries(2, offset=10) + queries(1, offset=10),
                    on_progress=done.append)
    assert done == [2, 4, 5]
    # another model or task is another question
    with LabelStore(path) as store:
        _, report = store.label(labeller(fake_vlm, model="other"), qs[:1])
    assert report.calls == 1


def test_store_keeps_answers_of_a_run_that_crashed(fake_vlm, tmp_path):
    qs = queries(6)
    path = tmp_path / "labels.sqlite"
    vlm = labeller(fake_vlm, concurrency=1)
    real_answer = vlm.answer
    count = [0]

    def crashing(query):
        count[0] += 1
        if count[0] > 3:
            raise KeyboardInterrupt  # the operator's Ctrl-C, or a crash
        return real_answer(query)

    vlm.answer = crashing
    store = LabelStore(path)
    with pytest.raises(KeyboardInterrupt):
        store.label(vlm, qs)
    del store  # no close(): each label was committed as it arrived
    with LabelStore(path) as store:
        assert len(store) == 3
        _, report = store.label(labeller(fake_vlm), qs)
    assert report.cache_hits == 3 and report.calls == 3
    assert len(fake_vlm.label_requests()) == 6  # each pair asked once in all


def test_accuracy_against_oracle(fake_vlm, tmp_path):
    fake_vlm.replies = {"a": "0", "b": "1", "c": "-1"}
    qs = [PreferenceQuery(image(i), image(i + 9), task) for i, task in enumerate("abc")]
    with LabelStore(tmp_path / "s.sqlite") as store:
        _, report = store.label(labeller(fake_vlm), qs, oracle=np.array([0, 0, 1]))
    assert report.accuracy == 0.5 and report.compared == 2


@pytest.mark.parametrize("text,label", [
    ("0", 0), ("1", 1), ("-1", -1), (" `1` ", 1), ("Label: 0", 0), ("**-1**", -1),
    ("The goal is better achieved in Image 2.\n1", 1), ("1.", 1),
    ("Image 1", None), ("", None), (None, None), ("0 or 1", None), ("10", None), ("-1\n0", None),
])
def test_parse_label(text, label):
    assert parse_label(text) == label
