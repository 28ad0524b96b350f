"""``tether bench sim``: env steps per second of the vectorized arm env, against gymnasium's
``SyncVectorEnv`` of the same task and against bare MuJoCo, in the same run.

For every N in ``--num-envs`` four things step N arms with random actions for ``--duration``
seconds each (after a warm-up), one after the other:

* ``vec``: ``tether.sim.vec_env.ArmVecEnv`` (batched IK, ``mj_step`` in ``--num-threads`` threads,
  torch tensors in and out, auto-reset);
* ``sync``: ``gymnasium.make_vec(ID, N, vectorization_mode="sync")`` of the same task (one
  ``tether.sim.envs.ArmEnv`` per env, with gymnasium's standard wrappers, numpy in and out);
* ``raw``: bare ``mujoco.mj_step(model, data, nstep=10)`` on N ``MjData`` in one thread (no
  controller, no observations: the physics alone);
* ``raw_threaded``: the same in the vec env's thread pool (what the physics costs at best with
  these threads).

An env step is one 20 ms control period (10 physics steps). ``speedup_vs_sync`` = vec / sync;
``overhead_vs_raw`` = raw / vec (how much slower than the physics alone in one thread), and
``overhead_vs_raw_threaded`` likewise. Targets (issue 9): >= 3x sync at 64 envs, overhead over raw
MuJoCo <= 1.5x (checked at 64 envs: a batch of one pays the batched IK, the tensors and the
TensorDict, ~130 us a step, for a single arm, so its overhead is ~3x by construction). The machine's load average is recorded: on a shared machine threads compete with
other processes, and every figure moves with it.
"""

from __future__ import annotations

import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tether.launch import UsageError


@dataclass
class SimBench:
    """Benchmark the vectorized arm env: env steps/s against gymnasium's SyncVectorEnv and raw
    MuJoCo."""

    task: Literal["reach", "push"] = "reach"
    num_envs: str = "1,16,64,256"
    """Comma-separated env counts."""
    duration: float = 3.0
    """Seconds of each measurement."""
    num_threads: int | None = None
    """Threads of the vectorized env (default: CPU count)."""
    randomize: str = "none"
    """Randomization of the vectorized env (the baselines are nominal)."""
    skip_sync: bool = False
    """Leave out the SyncVectorEnv baseline (slow at large N)."""
    json: bool = False
    """Print the result as JSON only."""


def _rate(step, n: int, seconds: float, warmup: int = 3) -> float:
    """Env steps per second of ``step()`` (which advances ``n`` envs)."""
    for _ in range(warmup):
        step()
    count, start = 0, time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count * n / elapsed


def bench_sim(cmd: SimBench) -> dict:
    """Run the measurements (see the module docstring); returns the result dict.

    Raises:
        UsageError: a bad ``--num-envs`` list.
    """
    import gymnasium as gym
    import mujoco
    import torch

    from tether.sim import arm
    from tether.sim.envs import register_envs
    from tether.sim.vec_env import ArmVecEnv

    try:
        counts = [int(x) for x in cmd.num_envs.split(",") if x.strip()]
    except ValueError as e:
        raise UsageError(f"--num-envs {cmd.num_envs!r}: expected e.g. 1,16,64,256") from e
    if not counts or min(counts) < 1:
        raise UsageError("--num-envs needs positive counts")
    torch.set_num_threads(1)
    register_envs()
    env_id = {"reach": "tether/Reach-v0", "push": "tether/Push-v0"}[cmd.task]
    rng = np.random.default_rng(0)
    rows = []
    for n in counts:
        row: dict = {"num_envs": n}
        vec = ArmVecEnv(cmd.task, n, randomize=cmd.randomize, num_threads=cmd.num_threads)
        actions = torch.from_numpy(rng.uniform(-1, 1, (64, n, vec.num_actions)).astype(np.float32))
        k = iter(range(10**12))
        row["vec"] = _rate(lambda: vec.step(actions[next(k) % 64]), n, cmd.duration)
        row["threads"] = vec.num_threads

        model = vec.scene.model
        datas = [mujoco.MjData(model) for _ in range(n)]
        for i, d in enumerate(datas):
            arm.reset(vec.scene, d, cmd.task, np.random.default_rng(i))

        def raw(envs=range(n)):
            for i in envs:
                mujoco.mj_step(model, datas[i], nstep=arm.FRAME_SKIP)

        row["raw"] = _rate(raw, n, cmd.duration)
        chunks, threads = vec._chunks, vec.num_threads
        with ThreadPoolExecutor(threads) as pool:
            row["raw_threaded"] = _rate(
                lambda: [f.result() for f in [pool.submit(raw, c) for c in chunks]], n, cmd.duration)
        vec.close()

        if not cmd.skip_sync:
            sync = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync")
            sync.reset(seed=0)
            low, high = sync.single_action_space.low, sync.single_action_space.high
            sync_actions = low + (high - low) * (actions.numpy() + 1) / 2
            k2 = iter(range(10**12))
            row["sync"] = _rate(lambda: sync.step(sync_actions[next(k2) % 64]), n, cmd.duration)
            sync.close()
            row["speedup_vs_sync"] = row["vec"] / row["sync"]
        row["overhead_vs_raw"] = row["raw"] / row["vec"]
        row["overhead_vs_raw_threaded"] = row["raw_threaded"] / row["vec"]
        rows.append(row)

    at64 = next((r for r in rows if r["num_envs"] == 64), None)
    checks = {}
    if at64 is not None:
        if "speedup_vs_sync" in at64:
            checks["speedup_vs_sync_ge_3x_at_64"] = at64["speedup_vs_sync"] >= 3.0
        checks["overhead_vs_raw_le_1_5x_at_64"] = at64["overhead_vs_raw"] <= 1.5
    return {
        "task": cmd.task,
        "unit": "env steps/s (one env step = one 20 ms control period = 10 physics steps)",
        "randomize": cmd.randomize,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "machine": platform.processor() or platform.machine(),
        "mujoco": mujoco.__version__,
        "rows": rows,
        "checks": checks,
    }


def print_result(result: dict) -> None:
    print(f"{result['task']}: env steps/s ({result['cpu_count']} CPUs, load "
          f"{result['load_average_1min']:.1f}, MuJoCo {result['mujoco']})")
    print(f"{'envs':>6} {'vec':>9} {'sync':>9} {'raw':>9} {'raw thr':>9} {'vs sync':>8} {'raw/vec':>8}")
    for r in result["rows"]:
        sync = f"{r['sync']:9.0f}" if "sync" in r else f"{'-':>9}"
        speed = f"{r['speedup_vs_sync']:7.2f}x" if "speedup_vs_sync" in r else f"{'-':>8}"
        print(f"{r['num_envs']:6d} {r['vec']:9.0f} {sync} {r['raw']:9.0f} {r['raw_threaded']:9.0f} "
              f"{speed} {r['overhead_vs_raw']:7.2f}x")
    print(result["checks"])
