"""MetaWorld v3 adapter: spec, seeded resets, experts, rendering and errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tether.sim.metaworld import (
    DEFAULT_TASKS, MetaWorldTask, UnknownTaskError, check_tasks, expert_policy, metaworld_spec,
)


def test_spec_describes_the_observation_and_action():
    spec = metaworld_spec(DEFAULT_TASKS, cameras=("corner",), image_size=32)
    assert spec.control_rate_hz == 80.0
    state = spec.observation["observation.state"]
    assert state.shape == (39,) and len(state.names) == 39 and state.names[-1] == "goal_z"
    assert spec.observation["observation.images.corner"].shape == (32, 32, 3)
    assert spec.action.low == (-1.0,) * 4 and spec.tasks == DEFAULT_TASKS


def test_seed_names_one_initial_condition():
    task = MetaWorldTask("drawer-open-v3")
    a, b, c = task.reset(5), task.reset(5), task.reset(6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.dtype == np.float32 and a.shape == (39,)


def test_the_reset_frame_shows_this_episodes_goal():
    import mujoco

    task = MetaWorldTask("reach-v3")
    goal = mujoco.mj_name2id(task.model, mujoco.mjtObj.mjOBJ_SITE, "goal")
    for seed in (1, 2):  # the second reset must not show the first episode's goal
        state = task.reset(seed)
        np.testing.assert_allclose(task.data.site_xpos[goal], state[36:39], atol=1e-6)


@pytest.mark.parametrize("name", DEFAULT_TASKS)
def test_expert_solves_its_task(name):
    task, expert = MetaWorldTask(name, max_episode_steps=200), expert_policy(name)
    state = task.reset(0)
    for _ in range(200):
        action = expert(state)
        assert np.all(np.abs(action) <= 1)
        result = task.step(action)
        state = result.state
        if result.success:
            break
    assert result.success


def test_unknown_task_suggests_close_names():
    with pytest.raises(UnknownTaskError, match="did you mean drawer-open-v3"):
        check_tasks(["drawer-opn-v3"])


def test_unknown_render_backend_is_one_line_with_a_fix():
    code = (
        "from tether.sim.gl import check_render_backend, RenderBackendError\n"
        "try:\n    check_render_backend()\nexcept RenderBackendError as e:\n    print(e)"
    )
    env = {**os.environ, "MUJOCO_GL": "not-a-backend"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
    assert out.count("\n") == 1
    assert out.startswith("MuJoCo could not render headless with MUJOCO_GL='not-a-backend'")
    assert "apt-get install libegl1" in out


def test_render_backend_works_here():
    from tether.sim.gl import check_render_backend

    check_render_backend()  # MUJOCO_GL=egl: software EGL works on a machine without a GPU
