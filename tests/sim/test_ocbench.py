"""OCBench adapter: spec, seeded resets, OCBench's termination, the scripted controller driving the
env from published values only, and one-line errors for unknown envs and tasks."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ocbench")

from tether.sim import ocbench  # noqa: E402


@pytest.fixture(scope="module")
def sim():
    s = ocbench.OCBenchSim("block-lite-single")
    yield s
    s.close()


def test_spec_and_seeded_reset(sim):
    spec = sim.spec
    assert spec.control_rate_hz == 10.0 and spec.tasks == ("task1",)
    assert spec.observation["observation.state"].shape == (28,) and spec.action.shape == (7,)
    a = sim.reset("task1", 3)
    b = sim.reset("task1", 3)
    c = sim.reset("task1", 4)
    assert np.array_equal(a["observation.state"], b["observation.state"])
    assert not np.array_equal(a["observation.state"], c["observation.state"])
    assert a["observation.qpos"].shape == spec.observation["observation.qpos"].shape


def test_scripted_policy_solves_the_task_from_published_values(sim):
    policy = ocbench.ScriptedPolicy("block-lite-single")
    values = sim.reset("task1", 0)
    policy.reset(values, "task1", 0, seed=0)
    success = done = False
    first = None
    while not done:
        action = policy(values, sim.steps)
        first = action if first is None else first
        assert action.shape == (7,) and np.abs(action).max() <= 1
        values, success, done = sim.step(action)
    assert success and sim.steps < sim.limit  # OCBench terminates at success
    # the same seed gives the same first action (the controller's randomness is seeded)
    values = sim.reset("task1", 0)
    policy.reset(values, "task1", 0, seed=0)
    assert np.array_equal(policy(values, 0), first)


def test_zero_action_holds_and_limit(sim):
    values = sim.reset("task1", 1)
    after, success, done = sim.step(np.zeros(7, np.float32))
    assert not success and not done
    assert np.abs(after["observation.state"][:6] - values["observation.state"][:6]).max() < 0.05
    assert ocbench.episode_limit("block-lite-single", "task1") == 200


@pytest.mark.parametrize("call,message", [
    (lambda: ocbench.check_env("block-lite-singel"), "did you mean block-lite-single"),
    (lambda: ocbench.check_task("block-lite-single", "task2"), "unknown task 'task2'"),
])
def test_bad_names_are_one_line(call, message):
    with pytest.raises(ValueError, match=message) as e:
        call()
    assert "\n" not in str(e.value)
