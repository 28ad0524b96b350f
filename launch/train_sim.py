"""``tether train-sim``: train PPO (rsl_rl) in the vectorized arm simulation and export ONNX.

::

    tether train-sim --task reach --num-envs 256                          # nominal sim
    tether train-sim --task reach --num-envs 256 --randomize default      # domain randomization
    tether serve --robot arm --tasks reach --randomize reality_gap --lockstep --max-episode-steps 100 &
    tether eval runs/train_sim/policy.onnx --tasks reach                   # zero-shot on the gap robot

The env is ``tether.sim.vec_env.ArmVecEnv`` (N MuJoCo instances in threads; ``--randomize`` a
``tether.sim.randomization`` preset or JSON file); the learner is rsl_rl's ``OnPolicyRunner``
(``tether.policies.ppo``). At the end the actor and its observation normalization are exported to
``policy.onnx`` (parity-checked against torch) and evaluated in simulation, deterministically, on
``--eval-episodes`` seeds (from 1,000,000, as ``tether eval``) of the nominal arm and of the
``reality_gap`` arm.

Outputs in ``--out``: ``config.json`` (this command and rsl_rl's config), ``rsl_rl/`` (rsl_rl's
TensorBoard events, checkpoints ``model_*.pt``, console log ``rsl_rl.log``), ``randomization.jsonl``
(every episode's seed and parameters), ``progress.csv`` (per iteration: time, env steps, mean
return, success rate of the episodes that ended), ``policy.onnx``, ``report.json``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from tether.launch import UsageError
from tether.policies.ppo import PpoConfig

EVAL_SEED = 1_000_000


@dataclass
class TrainSimCommand:
    """Train a PPO policy (rsl_rl) in the vectorized arm simulation, with or without domain
    randomization, and export policy.onnx."""

    task: Literal["reach", "push"] = "reach"
    """Arm task (tether.sim.arm)."""
    num_envs: int = 256
    """Parallel envs (MuJoCo instances)."""
    iterations: int = 300
    """PPO iterations (each: num-steps-per-env x num-envs env steps, then the update)."""
    randomize: str = "none"
    """Domain randomization: none, default, reality_gap, or a JSON file (tether.sim.randomization)."""
    action_mode: Literal["ee_delta", "joint"] = "ee_delta"
    out: Path = Path("runs/train_sim")
    """Output folder."""
    overwrite: bool = False
    """Write into a non-empty --out."""
    seed: int = 0
    """Seed of torch and of the envs' first episodes."""
    num_threads: int | None = None
    """Threads stepping MuJoCo (default: CPU count)."""
    device: str = "cpu"
    """Torch device of the learner and of the env's tensors."""
    torch_threads: int = 1
    """torch's intra-op threads for the learner: its matrices are small, and more threads than
    free cores make OpenMP spin (20x slower updates measured on a loaded 2-core machine)."""
    max_minutes: float | None = None
    """Stop after the iteration that passes this wall time, and export what was reached."""
    eval_episodes: int = 100
    """Episodes of the final in-sim evaluation (nominal and reality_gap arms); 0: skip it."""
    ppo: PpoConfig = field(default_factory=PpoConfig)


class _TimeUp(Exception):
    pass


def evaluate_in_sim(actor_model, task: str, action_mode: str, randomize: str, episodes: int,
                    num_threads: int | None = None, device: str = "cpu") -> dict:
    """Success rate of the deterministic rsl_rl actor on ``episodes`` seeds from ``EVAL_SEED``,
    one episode per env (terminate on success, the task's horizon)."""
    import torch

    from tether.sim.vec_env import ArmVecEnv

    env = ArmVecEnv(task, episodes, action_mode, randomize=randomize, device=device,
                    seed=EVAL_SEED, num_threads=num_threads)
    obs = env.get_observations()
    success = torch.zeros(episodes, dtype=torch.bool)
    running = torch.ones(episodes, dtype=torch.bool)
    steps = torch.zeros(episodes)
    with torch.inference_mode():
        for _ in range(env.max_episode_length):
            obs, _, dones, extras = env.step(actor_model(obs.to(device)))
            done = dones.bool().cpu()
            success |= running & extras["success"].cpu()
            steps += running.float()
            running &= ~done
            if not running.any():
                break
    env.close()
    return {"randomize": randomize, "episodes": episodes,
            "success_rate": float(success.float().mean()),
            "mean_length": float(steps.mean())}


def train_sim(cmd: TrainSimCommand) -> dict:
    """Train, export and evaluate as ``cmd`` says; returns the report (also in report.json).

    Raises:
        UsageError: rsl_rl is missing, or bad settings.
        OutputExistsError: ``--out`` is not empty (without ``--overwrite``).
    """
    try:
        from rsl_rl.runners import OnPolicyRunner
    except ImportError as e:
        raise UsageError("tether train-sim needs rsl_rl: pip install 'tether[sim-rl]'") from e
    import torch

    from tether.launch.demo import prepare_output
    from tether.policies.ppo import export_actor, runner_config
    from tether.sim import arm
    from tether.sim.randomization import UnknownPresetError
    from tether.sim.vec_env import ArmVecEnv

    if cmd.num_envs < 1 or cmd.iterations < 1:
        raise UsageError("--num-envs and --iterations must be >= 1")
    prepare_output(cmd.out, cmd.overwrite)
    torch.manual_seed(cmd.seed)
    torch.set_num_threads(cmd.torch_threads)
    try:
        env = ArmVecEnv(cmd.task, cmd.num_envs, cmd.action_mode, randomize=cmd.randomize,
                        device=cmd.device, seed=cmd.seed, num_threads=cmd.num_threads,
                        param_log=cmd.out / "randomization.jsonl")
    except UnknownPresetError as e:
        raise UsageError(str(e)) from e
    train_cfg = runner_config(cmd.ppo)
    (cmd.out / "config.json").write_text(json.dumps(
        {"command": asdict(cmd), "env": env.cfg, "rsl_rl": train_cfg}, indent=2, default=str))
    log_dir = cmd.out / "rsl_rl"
    log_dir.mkdir(exist_ok=True)
    rsl_log = (log_dir / "rsl_rl.log").open("w")

    console = sys.stdout
    rows: list[dict] = []
    start = time.perf_counter()
    progress = (cmd.out / "progress.csv").open("w", newline="")
    writer = csv.DictWriter(progress, ["iteration", "wall_s", "env_steps", "mean_return",
                                       "success_rate", "episodes", "action_std"])
    writer.writeheader()
    with contextlib.redirect_stdout(rsl_log):  # rsl_rl prints a block per iteration
        runner = OnPolicyRunner(env, train_cfg, log_dir=str(log_dir), device=cmd.device)
    logger_log = runner.logger.log

    def log(**kw):
        # read the iteration's episode statistics before rsl_rl's logger clears them
        ended = [e["Episode/success_rate"] for e in runner.logger.ep_extras
                 if "Episode/success_rate" in e]
        with contextlib.redirect_stdout(rsl_log):
            logger_log(**kw)
        it = kw["it"] + 1
        ended = torch.cat([t.reshape(-1).float().cpu() for t in ended]) if ended else torch.zeros(0)
        rewards = list(runner.logger.rewbuffer)
        row = {
            "iteration": it, "wall_s": round(time.perf_counter() - start, 2),
            "env_steps": it * cmd.ppo.num_steps_per_env * cmd.num_envs,
            "mean_return": sum(rewards) / len(rewards) if rewards else math.nan,
            "success_rate": float(ended.mean()) if len(ended) else math.nan,
            "episodes": len(ended), "action_std": float(kw["action_std"].detach().mean()),
        }
        rows.append(row)
        writer.writerow(row)
        progress.flush()
        if it == 1 or it % 10 == 0 or it == cmd.iterations:
            print(f"it {it:4d}/{cmd.iterations}  {row['wall_s']:7.1f} s  return {row['mean_return']:7.3f}  "
                  f"success {row['success_rate']:.2f} ({row['episodes']} episodes)  "
                  f"std {row['action_std']:.3f}", file=console, flush=True)
        if cmd.max_minutes is not None and time.perf_counter() - start > 60 * cmd.max_minutes:
            raise _TimeUp

    runner.logger.log = log
    stopped_early = False
    try:
        with contextlib.redirect_stdout(rsl_log):
            runner.learn(cmd.iterations, init_at_random_ep_len=True)
    except _TimeUp:
        stopped_early = True
        print(f"stopped after {len(rows)} iterations: --max-minutes {cmd.max_minutes} reached")
    finally:
        progress.close()
    train_s = time.perf_counter() - start
    runner.save(str(log_dir / "model_final.pt"))
    runner.logger.stop_logging_writer()
    rsl_log.close()
    env.close()

    policy = runner.alg.get_policy()
    policy.eval()
    spec = arm.arm_spec((cmd.task,), cmd.action_mode)
    path, gap = export_actor(policy, spec, cmd.task, cmd.out / "policy.onnx", env.action_low,
                             env.action_high)
    evaluations = []
    if cmd.eval_episodes > 0:
        for randomize in ("none", "reality_gap"):
            evaluations.append(evaluate_in_sim(policy, cmd.task, cmd.action_mode, randomize,
                                               cmd.eval_episodes, cmd.num_threads, cmd.device))
    last = rows[-10:]
    report = {
        "task": cmd.task, "randomize": cmd.randomize, "num_envs": cmd.num_envs,
        "iterations": len(rows), "stopped_early": stopped_early,
        "env_steps": rows[-1]["env_steps"] if rows else 0,
        "train_wall_s": round(train_s, 1),
        "final_mean_return": rows[-1]["mean_return"] if rows else math.nan,
        "final_success_rate_last10": (
            sum(r["success_rate"] for r in last if not math.isnan(r["success_rate"]))
            / max(1, sum(not math.isnan(r["success_rate"]) for r in last))),
        "onnx": str(path), "onnx_parity_max_abs": gap,
        "sim_eval": evaluations,
    }
    (cmd.out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def main(cmd: TrainSimCommand) -> None:
    """Entry point of ``tether train-sim``: PPO in tether's batched MuJoCo env, then ONNX export."""
    report = train_sim(cmd)
    evals = ", ".join(f"{e['randomize']} {e['success_rate']:.0%}" for e in report["sim_eval"])
    print(f"{report['iterations']} iterations, {report['env_steps']} env steps in "
          f"{report['train_wall_s']:.0f} s; wrote {report['onnx']} (ONNX parity "
          f"{report['onnx_parity_max_abs']:.1e}); in-sim success: {evals or 'not evaluated'}")
