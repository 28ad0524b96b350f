"""``tether eval``: run a policy for N episodes per task with fixed seeds and report on it.

Modes (one command line, chosen by the options):

- robot server (default, ``--robot ADDR``): the deployment path, onnxruntime and ZeroMQ only, no
  torch. Policy latency is measured robot side, from the state message's arrival to the command
  leaving; the link's timing (tick period, command latency as the server measured it) and the
  ticks the server had to hold (no command in time) are recorded per episode.
- direct simulation (``--sim metaworld|pointmass|ogbench:NAME``, ``tether.launch.eval_sim``): the same drivers
  and safety layer as the robot server, stepped in lock-step with the policy, ``--num-envs`` worker
  processes in parallel.
- operator (``--operator``, ``tether.launch.eval_operator``): hardware behind a robot server; an
  operator starts every episode, judges it (success / failure), aborts or re-does it from the
  terminal, and has the e-stop on Space at every moment.
- ``tether eval compare RUN_A RUN_B ...`` (``tether.launch.eval_compare``): runs side by side.

Seeds: episode k of a task starts from ``seed + k`` (keep these away from the collection seeds),
and the policy's sampler noise is reseeded at every episode from (``seed + k``, task), so an
episode's outcome does not depend on which episodes ran before it, in which process. With a
deterministic policy, ``--sim`` and a robot server running the same simulator give the same
episodes (see ``tests/launch/test_eval.py``), as long as the server never had to hold
(``held_ticks`` 0). A real-time server holds the robot on every tick whose command came too late
(a loaded machine: ``eval.json`` then carries a warning); ``tether serve --lockstep`` (simulators)
ticks as soon as the policy answers and holds only after a whole period without an answer. The
robot also holds on an action its safety layer refuses (NaN/inf, outside the limits, the wrong
shape): each output is checked with the server's own ``SafetyFilter`` on the spec it sent, so
``eval.json``'s ``safety_refusals`` and warnings say which check refused it (``--sim`` prints the
warnings too), and only the held ticks no refusal explains are blamed on lateness.

A ``policy.pt`` checkpoint is exported to ``OUT/policy.onnx`` first (``tether export``, parity
checked) and evaluated as ONNX: one code path runs every policy, at the cost of torch in this
process (export on a workstation, not on the robot computer).

Outputs in ``--out``: ``eval.json`` (everything, with LeRobot ``eval_info.json``-style
``per_episode`` / ``per_task`` / ``aggregated`` fields: ``pc_success``, ``avg_sum_reward``),
``eval.md``, ``eval.png`` and up to ``--videos-per-task`` MP4s per task, successes and failures,
named ``TASK_epK_seedS_success.mp4`` / ``..._failure.mp4``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

from tether.launch import UsageError

DEFAULT_ROBOT = "tcp://127.0.0.1:5555"


@dataclass
class EvalCommand:
    """Evaluate a policy (success rate with 95% Wilson interval, returns, latency, videos) on a
    robot server, directly in simulation (--sim), or with an operator (--operator); or compare
    runs: tether eval compare RUN_A RUN_B ..."""

    policy: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="POLICY|compare")]
    """policy.onnx (tether export) or policy.pt (exported first); or the word compare."""
    runs: Annotated[tyro.conf.Positional[tuple[Path, ...]], tyro.conf.arg(metavar="[RUN ...]")] = ()
    """After compare: two or more eval folders (or their eval.json); the first is the baseline."""
    robot: str | None = None
    """Address of a running robot server (tether serve); default tcp://127.0.0.1:5555."""
    sim: Literal["metaworld", "pointmass", "ogbench:scene", "ogbench:cube-single", "ocbench:block-lite-single",
                 "ocbench:block-lite-double", "ocbench:block-lite-triple", "ocbench:block-single",
                 "ocbench:block-double"] | None = None
    """Evaluate directly in this simulator, no robot server (lock-stepped, same safety layer).
    OGBench: its 5 evaluation goals (task1..task5) for a goal-observation policy. OCBench: the
    policy's tasks, each episode to OCBench's termination or the task's step limit."""
    num_envs: int = 1
    """With --sim: episodes run in parallel in this many worker processes."""
    operator: bool = False
    """Hardware mode: the operator starts, judges, aborts or re-does each episode from this terminal
    (Enter start, s success, f failure, a abort, r re-do, Space e-stop, c clear it, Q quit)."""
    out: Path = Path("runs/eval")
    """Output folder (eval.json, eval.md, eval.png, videos/); for compare: compare.*."""
    tasks: tuple[str, ...] = ()
    """Tasks to evaluate; default: every task of the policy (for a policy conditioned on goal
    observations: every evaluation goal of the simulator or robot)."""
    episodes: int = 20
    """Episodes per task."""
    seed: int = 1_000_000
    """Seed of each task's first episode; episode k uses seed + k."""
    action_steps: int = 1
    """Actions of each predicted chunk executed before the policy is asked again (Diffusion
    Policy's n_action_steps): 1 re-plans every tick; up to the policy's action horizon. On a
    robot server the whole chunk is sent (``RobotClient.send_chunk``), so a late re-plan finds
    the plan still running."""
    chunk_blend: Literal["latest", "ensemble"] = "latest"
    """With --sim: how overlapping chunks run. latest runs the newest chunk; ensemble averages
    every chunk covering a tick, weights exp(-m i), i = 0 the oldest (ACT's temporal ensembling;
    with --action-steps 1 the policy then plans every tick and each action averages up to H
    predictions). A robot server blends the chunks it gets (--action-steps >= 2) as it was
    started: tether serve --chunk-blend."""
    chunk_ensemble_m: float = 0.01
    """m of --chunk-blend ensemble (ACT: 0.01; larger trusts the older predictions more)."""
    deterministic: bool = False
    """Feed the policy zero noise instead of fresh N(0, I) noise per call: a diffusion sampler
    (BESO) then starts from zeros, one plan per state; a stochastic SAC policy gives its mean."""
    critic: Path | None = None
    """critic.onnx (tether train --algo gciql writes one): rank --candidates samples of a
    diffusion policy conditioned on the same observation.goal and run the best (IDQL's greedy
    value-guided sampling, ``tether.robot.critic``)."""
    candidates: int = 1
    """Samples per policy call for --critic to choose among."""
    videos_per_task: int = 2
    """Up to this many MP4s per task, half successes and half failures when there are both (needs
    a camera: on the server, or --camera in --sim)."""
    camera: str | None = None
    """With --sim: camera to film (default: MetaWorld's corner; the point mass has none)."""
    image_size: int = 128
    """With --sim: video resolution in pixels (square)."""
    max_episode_steps: int | None = None
    """With --sim: episode limit in control ticks (as tether serve --max-episode-steps); default:
    the benchmark's (OGBench: 200 cube-single, 750 scene), else 500."""
    alpha: float = 0.05
    """For compare: significance level of the two-sided Fisher exact test."""
    busy_wait: bool = False
    """Robot server modes: wait for each state polling the link without sleeping (a core at 100%):
    the policy runs on a warm core (3-step BESO at 100 Hz on 2 cores: policy step p99 5.67 ->
    4.94 ms; tether.robot.client.RobotClient)."""
    client_key: Path | None = None
    """This client's secret key (.key_secret), for a server with CurveZMQ keys."""
    server_public_key: Path | None = None
    """The server's public key (.key), with --client-key."""
    progress_lines: bool = False
    """Print 'progress DONE TOTAL' lines instead of a progress bar (for a parent process)."""
    goal_image: Path | None = None
    """A goal-image or multimodal-goal policy's goal: an image file (PNG/JPEG, RGB after loading) of the goal
    camera's exact frame size."""
    goal_text: str | None = None
    """A language-goal or multimodal-goal policy's instruction for every episode (embedded by its CLIP text
    tower; needs torch and open_clip on this computer); default: each task's own string."""
    rerun: bool = False
    """Live Rerun view (spawned viewer; pip install 'tether[rerun]'): cameras, commanded, applied
    and measured joints, policy latency, e-stop and watchdog events; fed from a queue, never from
    the control loop's thread (robot server and --operator modes)."""
    rerun_save: Path | None = None
    """Write the live view to this Rerun recording (FILE.rrd) instead of spawning a viewer;
    implies --rerun."""


# ------------------------------------------------------------------------------------- helpers
def percentile_ms(values_s: list[float], q: float) -> float:
    """The q-th percentile of durations given in s, in ms (NaN for none)."""
    return float(np.percentile(np.asarray(values_s) * 1000, q)) if values_s else float("nan")


def noise_seed(seed: int, task: str) -> list[int]:
    """Entropy of an episode's sampler noise: its env seed and the task (CRC-32 of the name)."""
    return [int(seed), zlib.crc32(task.encode())]


def start_episode(runner, task: str, seed: int) -> None:
    """Reset ``runner`` (a ``PolicyRunner``) for an episode of ``task`` and reseed its noise.

    ``PolicyRunner`` draws noise from one generator for its lifetime; reseeding per episode makes
    an episode independent of the ones before it (parallel workers, replays for videos).
    """
    runner.reset(task, seed=noise_seed(seed, task))


def load_runner(cmd: EvalCommand, out: Path):
    """The ``PolicyRunner`` for ``cmd.policy``, exporting a ``.pt`` checkpoint to ``out`` first.

    Returns:
        (runner, path of the ONNX file it runs, the checkpoint it came from or None).

    Raises:
        FileNotFoundError: no such file. PolicyLoadError: not a tether policy.
        UsageError: a task the policy was not trained on, or ``--action-steps`` outside 1 to
            the policy's action horizon.
    """
    from tether.robot.runner import PolicyLoadError, PolicyRunner

    path, checkpoint = cmd.policy, None
    if not path.is_file():
        raise FileNotFoundError(f"policy file {path} does not exist")
    if path.suffix == ".pt":
        from tether.launch.export import ExportCommand, export

        checkpoint = path
        path, _, _ = export(ExportCommand(checkpoint, out / "policy.onnx"))
    try:
        runner = PolicyRunner(path, seed=cmd.seed, deterministic=cmd.deterministic, critic=cmd.critic,
                              candidates=cmd.candidates)
    except PolicyLoadError:
        raise
    except ValueError as e:  # candidates without a critic, or with --deterministic
        raise UsageError(f"--candidates: {e}") from None
    if not 1 <= cmd.action_steps <= runner.action_horizon:
        raise UsageError(f"--action-steps {cmd.action_steps}: the policy predicts chunks of "
                         f"{runner.action_horizon} action(s), so 1 to {runner.action_horizon}")
    fix_goal(cmd, runner)
    # a goal-observation policy is not tied to task names: the robot's goals say what to do
    unknown = [] if runner.goal_conditioned_on_observations else [t for t in cmd.tasks if t not in runner.tasks]
    if unknown:
        raise UsageError(f"--tasks {' '.join(unknown)}: the policy knows only {' '.join(runner.tasks)}")
    return runner, path, checkpoint


def fix_goal(cmd: EvalCommand, runner) -> None:
    """Hand ``--goal-image`` / ``--goal-text`` to the runner (``PolicyRunner.fix_goal``).

    Raises:
        UsageError: an unreadable image, an empty text, a goal of the wrong shape or kind for
            the policy (one line naming the setting).
    """
    if cmd.goal_image is None and cmd.goal_text is None:
        if runner.goal_kind == "image":
            raise UsageError(f"the policy is conditioned on a goal image {list(runner.goal_image_shape)}: "
                             "give --goal-image FILE")
        return
    image = embedding = None
    if cmd.goal_image is not None:
        import cv2

        bgr = cv2.imread(str(cmd.goal_image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UsageError(f"--goal-image {cmd.goal_image}: not an image file OpenCV can read")
        image = np.ascontiguousarray(bgr[:, :, ::-1])
    if cmd.goal_text is not None:
        from tether.policies.language_goals import LanguageGoalError, text_embeddings

        if cmd.goal_image is not None:
            raise UsageError("--goal-image and --goal-text: give one goal, not both")
        if runner.goal_kind not in ("text_embedding", "multimodal"):
            raise UsageError(f"--goal-text: the policy's goal is a {runner.goal_kind.replace('_', ' ')}, "
                             "not a language goal")
        try:
            embedding = text_embeddings([cmd.goal_text], runner.meta["goal"].get("clip_model", "ViT-S-32"))[0]
        except LanguageGoalError as e:
            raise UsageError(f"--goal-text: {e}") from None
    try:
        runner.fix_goal(image, embedding)
    except ValueError as e:
        raise UsageError(f"--goal-{'image' if image is not None else 'text'}: {e}") from None


def eval_tasks(cmd: EvalCommand, runner, robot_spec) -> list[str]:
    """The tasks to evaluate: ``--tasks``, else the policy's; a policy conditioned on goal
    observations is evaluated on the robot's evaluation goals (its tasks but ``play``).

    Raises:
        UsageError: a goal-observation policy and a robot without evaluation goals.
    """
    if cmd.tasks:
        return list(cmd.tasks)
    if not runner.goal_conditioned_on_observations:
        return list(runner.tasks)
    goals = [t for t in robot_spec.tasks if t != "play"]
    if not goals:
        raise UsageError("the policy is conditioned on goal observations and the robot lists no "
                         "evaluation goals: pass --tasks")
    return goals


# The safety layer's reasons for refusing a command (``tether.robot.safety.SafetyFilter.check``,
# the server's ``stats.clipped``), as a report says them.
REFUSAL_REASONS = {
    "non_finite": "NaN or inf in the action",
    "out_of_limits": "outside the action's limits (the spec's low/high)",
    "bad_shape": "not of the action's shape",
    "bad_dtype": "an integer or bool array for a float action",
}


def safety_refusal(safety, actions: np.ndarray, chunk: bool = False) -> str | None:
    """Which check of the robot's safety layer refuses ``actions``, or None when it accepts them.

    The client runs the server's own ``SafetyFilter.check`` on the robot spec the server sent in
    its handshake, so it knows why the server will hold the robot (a robot server says only that
    a command was dropped, not to whom).

    Args:
        safety: a ``tether.robot.safety.SafetyFilter`` of the robot's spec.
        actions: one action (spec's shape), or with ``chunk`` an action chunk [K, *shape].

    Returns:
        A key of ``REFUSAL_REASONS`` (``non_finite``, ``out_of_limits``, ``bad_shape``,
        ``bad_dtype``), or None.
    """
    from tether.robot.safety import SafetyViolation

    actions = np.asarray(actions, np.float32)  # what RobotClient sends
    shape = tuple(safety.spec.action.shape)
    if chunk and (actions.ndim != len(shape) + 1 or actions.shape[1:] != shape):
        return "bad_shape"
    before = dict(safety.counts)
    try:
        for action in (actions if chunk else [actions]):
            safety.check(action)
    except SafetyViolation:
        grown = [k for k, n in safety.counts.items() if n > before.get(k, 0)]
        return grown[0] if grown else "bad_shape"
    return None


def refusal_warnings(episodes: list[dict], refused: dict[str, int], actions: int,
                     late: bool = True) -> list[str]:
    """Warnings on the ticks the robot held: those the safety layer's refusals explain (by
    check), and the rest (late commands: a slow policy, link or machine).

    Args:
        episodes: per-episode records with ``held_ticks`` and ``held_refused`` (ticks held
            after a refused command).
        refused: reason -> policy outputs the safety layer refused.
        actions: policy outputs sent (actions, or chunks).
        late: also warn of held ticks that no refusal explains (not in direct simulation,
            which is lock-stepped: a tick is never held for lateness there).
    """
    warnings = []
    held = sum(e["held_ticks"] for e in episodes)
    ticks = sum(e["length"] for e in episodes)
    held_refused = sum(e.get("held_refused", 0) for e in episodes)
    if refused:
        n = sum(refused.values())
        why = "; ".join(f"{reason} {count}: {REFUSAL_REASONS.get(reason, reason)}"
                        for reason, count in sorted(refused.items(), key=lambda kv: -kv[1]))
        warnings.append(
            f"the robot's safety layer refused {n} of {actions} policy outputs ({why}), so the robot "
            f"held instead on {held_refused} of {ticks} ticks: the policy's outputs are at fault, not "
            "the machine or the link (check the policy: its export, normalization, action limits)")
    late_warning, late = late, held - held_refused
    if late > 0 and late_warning:
        warnings.append(
            f"the server held the robot on {late} of {ticks} ticks for want of a command in time: the "
            "policy or the link did not keep up with the control rate (a loaded machine?), so these "
            "episodes differ from lock-stepped ones (--sim) with the same seeds")
    return warnings


def video_name(task: str, episode: dict) -> str:
    """File name of an episode's MP4: outcome in the name, e.g. ``reach-v3_ep003_seed1000003_failure.mp4``."""
    outcome = episode.get("status") or ("success" if episode["success"] else "failure")
    return f"{task}_ep{episode['index']:03d}_seed{episode['seed']}_{outcome}.mp4"


class VideoQuota:
    """Which episodes of a task to film when outcomes are only known afterwards (robot mode).

    Up to ``k`` per task; each outcome may take ceil(k / 2) of them, so a task with both
    successes and failures gets both (for k >= 2), and a task with one outcome gets ceil(k / 2).
    """

    def __init__(self, k: int):
        self.k = k
        self.taken: dict[str, list[bool]] = {}

    def want(self, task: str) -> bool:
        """Whether the next episode of ``task`` is worth recording at all."""
        return len(self.taken.get(task, [])) < self.k

    def keep(self, task: str, success: bool) -> bool:
        taken = self.taken.setdefault(task, [])
        if len(taken) >= self.k or taken.count(success) >= math.ceil(self.k / 2):
            return False
        taken.append(success)
        return True


def choose_videos(episodes: list[dict], k: int) -> list[dict]:
    """Up to ``k`` episodes of one task to film, chosen after the fact (deterministic replays):
    the first ceil(k/2) successes and floor(k/2) failures, topped up from the other outcome."""
    wins = [e for e in episodes if e["success"]]
    losses = [e for e in episodes if not e["success"]]
    n_win = min(len(wins), max(math.ceil(k / 2), k - len(losses)))
    n_loss = min(len(losses), k - n_win)
    return sorted(wins[:n_win] + losses[:n_loss], key=lambda e: e["index"])


def summarize(
    cmd: EvalCommand,
    mode: str,
    tasks: list[str],
    episodes: list[dict],
    latencies_s: list[float],
    extra: dict,
) -> dict:
    """The content of ``eval.json``: per-episode records, per-task and overall statistics.

    ``episodes`` items: task, index, seed, success, return, length, held_ticks, video (path or
    None) and, in operator mode, status (success / failure / aborted). Aborted episodes are kept
    in ``per_episode`` and left out of every rate. Success rates come with the 95% Wilson score
    interval; the overall rate pools every counted episode (equal to the mean over tasks when
    each task has the same number of episodes).
    """
    from tether.launch.report import wilson_interval

    counted = [e for e in episodes if e.get("status") != "aborted"]
    per_task = {}
    for task in tasks:
        eps = [e for e in counted if e["task"] == task]
        wins = sum(e["success"] for e in eps)
        returns = [e["return"] for e in eps]
        lengths = [e["length"] for e in eps]
        per_task[task] = {
            "success_rate": wins / len(eps) if eps else float("nan"),
            "pc_success": 100 * wins / len(eps) if eps else float("nan"),
            "successes": wins,
            "episodes": len(eps),
            "success_ci95": list(wilson_interval(wins, len(eps))),
            "mean_return": float(np.mean(returns)) if eps else float("nan"),
            "std_return": float(np.std(returns)) if eps else float("nan"),
            "mean_episode_length": float(np.mean(lengths)) if eps else float("nan"),
            "aborted": sum(e.get("status") == "aborted" for e in episodes if e["task"] == task),
            "per_episode": [e for e in episodes if e["task"] == task],
        }
    wins, n = sum(e["success"] for e in counted), len(counted)
    videos: dict[str, list[str]] = {}
    for e in episodes:
        if e.get("video"):
            videos.setdefault(e["task"], []).append(e["video"])
    results = {
        "mode": mode,
        "policy": str(cmd.policy),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cmd).items()},
        "success_rate": wins / n if n else float("nan"),
        "pc_success": 100 * wins / n if n else float("nan"),
        "successes": wins,
        "episodes": n,
        "success_ci95": list(wilson_interval(wins, n)),
        "tasks": per_task,
        "aggregated": {  # LeRobot eval_info.json's names
            "avg_sum_reward": float(np.mean([e["return"] for e in counted])) if n else float("nan"),
            "pc_success": 100 * wins / n if n else float("nan"),
        },
        "per_episode": episodes,
        "latency_ms": {
            "p50": percentile_ms(latencies_s, 50),
            "p99": percentile_ms(latencies_s, 99),
            "max": percentile_ms(latencies_s, 100),
            "samples": [round(x * 1000, 4) for x in latencies_s],
        },
        "videos": videos,
        # The deployment path must run without torch: record the evidence next to the results.
        "torch_imported": "torch" in sys.modules,
    }
    results.update(extra)
    return results


def write_results(out: Path, results: dict) -> dict:
    """Write eval.json, eval.md and eval.png into ``out``; returns ``results``."""
    from tether.launch.report import write_eval_report

    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2))
    write_eval_report(out, results)
    return results


# ----------------------------------------------------------------------------- robot-server mode
def robot_keys(cmd: EvalCommand):
    """Curve keys for the link, or None. Raises UsageError for a half-given pair."""
    from tether.robot.security import ClientKeys

    if cmd.client_key is None:
        return None
    if cmd.server_public_key is None:
        raise UsageError("--client-key needs --server-public-key")
    return ClientKeys(cmd.client_key, cmd.server_public_key)


class LinkStats:
    """The robot link's timing over a run: tick period (server clock) and command latency (from
    the server publishing a state to receiving the command answering it), both in s."""

    def __init__(self):
        self.periods: list[float] = []
        self.command_latencies: list[float] = []

    def add(self, state: dict) -> None:
        timing = state["timing"]
        if state["step"] > 1:  # the first period of an episode also spans the reset
            self.periods.append(timing["period_s"])
        if timing.get("command_latency_s") is not None:
            self.command_latencies.append(timing["command_latency_s"])

    def to_dict(self, rate_hz: float) -> dict:
        p50, p99 = percentile_ms(self.periods, 50), percentile_ms(self.periods, 99)
        return {
            "period_ms": {"target": 1000 / rate_hz, "p50": p50, "p99": p99, "jitter": p99 - p50},
            "command_latency_ms": {
                "p50": percentile_ms(self.command_latencies, 50),
                "p99": percentile_ms(self.command_latencies, 99),
            },
        }


def run_episode(client, runner, task: str, seed: int, camera: str | None, link: LinkStats,
                should_stop=None, action_steps: int = 1, safety=None, view=None):
    """One episode on a robot server, the policy answering every state it sees.

    Every state is read in order (rewards of all ticks are summed), the policy acts on the newest
    one queued. A tick on which the server applied no command (it held: the command came too
    late, or none was sent) is counted in ``held_ticks``.

    Args:
        should_stop: called once per state; returning a string ends the episode early with that
            as its ``stopped`` reason (operator keys), the robot holding from then on.
        action_steps: 1: one action per state (``send_action``); K > 1: the policy's whole chunk
            is sent for the ticks after the state (``send_chunk``, one control period apart) and
            the policy plans again once K ticks have passed, observing the states in between.
        safety: a ``SafetyFilter`` of the robot's spec (default: made from ``client.spec``):
            each output is checked with it before it is sent, to tell why the robot holds.
        view: a ``tether.launch.rerun_view.LiveView`` offered every state of the episode (with the
            output sent and the policy step that made it); it queues and returns at once.

    Returns:
        dict with success, return, length (ticks), held_ticks, held_refused (held ticks after a
        command the safety layer refuses), refused (reason -> refused outputs), sent (outputs
        sent), stopped (None or the reason), latencies (s, per policy call), frames (camera
        images, if ``camera``).
    """
    from collections import Counter

    if safety is None:
        from tether.robot.safety import SafetyFilter

        safety = SafetyFilter(client.spec)
    start_episode(runner, task, seed)
    state = client.reset(task, seed)
    latencies, frames = [], []
    total, held, last_step, replan_step = 0.0, 0, 0, 0
    refused, sent, held_refused, last_refused = Counter(), 0, 0, False
    while True:
        if camera is not None:
            frames.append(state["observation"][camera])
        stopped = should_stop(state) if should_stop is not None else None
        if state["done"] or stopped:
            if view is not None:
                view.observe(state)
            return {"success": bool(state["success"]), "return": total, "length": int(state["step"]),
                    "held_ticks": held, "held_refused": held_refused, "refused": dict(refused),
                    "sent": sent, "stopped": stopped, "latencies": latencies, "frames": frames}
        received = state["received"]
        output = None
        if action_steps == 1:
            output = runner.act(state["observation"])
            client.send_action(output, state["seq"])
            latencies.append(time.monotonic() - received)
        elif state["step"] >= replan_step:
            output = runner.act_chunk(state["observation"])
            client.send_chunk(output, runner.spec.period_s, state)
            latencies.append(time.monotonic() - received)
            replan_step = state["step"] + action_steps
        if output is not None:  # sent first: the check costs the robot no time
            reason = safety_refusal(safety, output, chunk=action_steps > 1)
            if reason is not None:
                refused[reason] += 1
            last_refused, sent = reason is not None, sent + 1
        else:
            runner.observe(state["observation"])
        if view is not None:  # after the send: the view costs the robot no time
            view.observe(state, output, latencies[-1] if output is not None else None)
        # Read every state in order (reward, held ticks, link timing); act on the newest. Done
        # states repeat (the server publishes every tick): only new steps count.
        queue = [client.next_state()]
        while client.pending():
            queue.append(client.next_state())
        for s in queue:
            if s["episode"] != state["episode"] or s["step"] <= last_step:
                continue
            last_step = s["step"]
            total += float(s["reward"])
            link.add(s)
            if s["timing"].get("command_latency_s") is None and not s["estop"]:
                held += 1
                held_refused += last_refused
            if view is not None and s is not queue[-1]:  # the last one is observed as it is acted on
                view.observe(s)
        if queue[-1]["episode"] != state["episode"]:
            raise RuntimeError(f"episode {state['episode']} was ended by another client of the server")
        state = queue[-1]


@contextlib.contextmanager
def eval_live_view(cmd: EvalCommand, spec):
    """The ``LiveView`` of ``--rerun`` / ``--rerun-save`` (None without), closed on the way out."""
    from tether.launch.rerun_view import live_view

    view = live_view("eval", spec, cmd.rerun, cmd.rerun_save)
    try:
        yield view
    finally:
        if view is not None:
            view.close()


def evaluate_robot(cmd: EvalCommand, on_episode=None) -> dict:
    """Robot-server mode: run, write ``cmd.out/eval.*``; returns the content of eval.json.

    ``safety_refusals`` (reason -> policy outputs refused, see ``safety_refusal``) and the
    warnings say which safety check held the robot; held ticks no refusal explains are blamed on
    late commands.

    Raises:
        tether.robot.client.RobotLinkError: the server is unreachable or refuses the policy.
        tether.robot.spec.SpecMismatchError: the policy does not fit the robot.
    """
    from collections import Counter

    from tether.robot.client import RobotClient
    from tether.robot.safety import SafetyFilter
    from tether.robot.video import write_mp4

    cmd.out.mkdir(parents=True, exist_ok=True)
    runner, onnx_path, checkpoint = load_runner(cmd, cmd.out)
    address = cmd.robot or DEFAULT_ROBOT
    episodes: list[dict] = []
    latencies: list[float] = []
    link = LinkStats()
    quota = VideoQuota(cmd.videos_per_task)
    refused: Counter = Counter()
    sent = 0
    t0 = time.perf_counter()
    with RobotClient(address, spec=runner.spec, name="policy-runner", keys=robot_keys(cmd),
                     busy_wait=cmd.busy_wait) as client, \
            eval_live_view(cmd, client.spec) as view:
        safety = SafetyFilter(client.spec)
        tasks = eval_tasks(cmd, runner, client.spec)
        total = len(tasks) * cmd.episodes
        client.spec.check_policy(runner.spec, tuple(tasks))
        cameras = [k for k, f in client.spec.observation.items() if f.is_image]
        camera = cameras[0] if cameras and cmd.videos_per_task > 0 else None
        for task in tasks:
            for k in range(cmd.episodes):
                seed = cmd.seed + k
                film = camera if quota.want(task) else None
                r = run_episode(client, runner, task, seed, film, link, action_steps=cmd.action_steps,
                                safety=safety, view=view)
                latencies += r["latencies"]
                refused.update(r["refused"])
                sent += r["sent"]
                episode = {"task": task, "index": k, "seed": seed, "success": r["success"],
                           "return": r["return"], "length": r["length"],
                           "held_ticks": r["held_ticks"], "held_refused": r["held_refused"],
                           "refused": r["refused"], "video": None}
                if r["frames"] and quota.keep(task, r["success"]):
                    path = cmd.out / "videos" / video_name(task, episode)
                    episode["video"] = str(write_mp4(path, np.stack(r["frames"]),
                                                     client.spec.control_rate_hz))
                episodes.append(episode)
                if on_episode is not None:
                    on_episode(task, r["success"], total)
        rate = client.spec.control_rate_hz
    links = link.to_dict(rate)
    extra = {
        "warnings": refusal_warnings(episodes, dict(refused), sent),
        "safety_refusals": dict(refused),
        "robot": address,
        "onnx": str(onnx_path),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "link": {**links, "held_ticks": sum(e["held_ticks"] for e in episodes)},
        "control_period_ms": {k: links["period_ms"][k] for k in ("target", "p50", "p99")},
        "eval_s": time.perf_counter() - t0,
    }
    return write_results(cmd.out, summarize(cmd, "robot", tasks, episodes, latencies, extra))


# ------------------------------------------------------------------------------------ dispatch
def check_command(cmd: EvalCommand) -> str:
    """Which mode ``cmd`` asks for (robot, sim, operator or compare).

    Raises:
        UsageError: options that contradict each other or make no sense (one line each).
    """
    if cmd.policy == Path("compare"):
        if len(cmd.runs) < 2:
            raise UsageError("tether eval compare needs two or more runs: compare RUN_A RUN_B ...")
        if not 0 < cmd.alpha < 1:
            raise UsageError(f"--alpha must be in (0, 1), got {cmd.alpha}")
        return "compare"
    if cmd.runs:
        raise UsageError(
            f"one policy at a time; got {len(cmd.runs) + 1} paths (to compare runs: tether eval "
            "compare RUN_A RUN_B ...)"
        )
    if cmd.episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {cmd.episodes}")
    if cmd.videos_per_task < 0:
        raise UsageError(f"--videos-per-task must be >= 0, got {cmd.videos_per_task}")
    if cmd.num_envs < 1:
        raise UsageError(f"--num-envs must be >= 1, got {cmd.num_envs}")
    if cmd.sim is not None:
        if cmd.rerun or cmd.rerun_save is not None:
            raise UsageError("--rerun views a robot server's stream; --sim runs its episodes in worker "
                             "processes: serve the simulator (tether serve --lockstep) and eval --robot")
        if cmd.robot is not None:
            raise UsageError("--sim evaluates without a robot server: drop --robot, or drop --sim")
        if cmd.operator:
            raise UsageError("--operator is for a robot server (hardware); it does not go with --sim")
        if cmd.max_episode_steps is not None and cmd.max_episode_steps < 1:
            raise UsageError(f"--max-episode-steps must be >= 1, got {cmd.max_episode_steps}")
        if cmd.chunk_ensemble_m < 0:
            raise UsageError(f"--chunk-ensemble-m must be >= 0, got {cmd.chunk_ensemble_m}")
        return "sim"
    if cmd.num_envs != 1:
        raise UsageError("--num-envs needs --sim: a robot server runs one episode at a time")
    if cmd.chunk_blend != "latest":
        raise UsageError("--chunk-blend needs --sim: a robot server blends the chunks it gets as it "
                         "was started (tether serve --chunk-blend ensemble)")
    return "operator" if cmd.operator else "robot"


def _with_progress(cmd: EvalCommand, fn) -> dict:
    if cmd.progress_lines:
        done = [0]

        def report(task: str, success: bool, total: int) -> None:
            done[0] += 1
            print(f"progress {done[0]} {total}", flush=True)

        return fn(cmd, report)
    from tether.launch.progress import progress_bar

    with progress_bar() as progress:
        bar = progress.add_task("eval", total=None)
        return fn(cmd, lambda task, ok, total: progress.update(bar, advance=1, total=total))


def main(cmd: EvalCommand) -> None:
    """Entry point of ``tether eval``: evaluate on a robot server, in simulation, with an operator, or
    compare runs."""
    mode = check_command(cmd)
    if mode == "compare":
        from tether.launch.eval_compare import main as compare_main

        compare_main(cmd)
        return
    if mode == "operator":
        from tether.launch.eval_operator import evaluate_operator

        results = evaluate_operator(cmd)
    elif mode == "sim":
        from tether.launch.eval_sim import evaluate_sim

        results = _with_progress(cmd, evaluate_sim)
    else:
        results = _with_progress(cmd, evaluate_robot)
    for warning in results.get("warnings", []):
        print(f"tether: warning: {warning}", file=sys.stderr)
    lo, hi = results["success_ci95"]
    summary = ", ".join(f"{t} {r['success_rate']:.2f}" for t, r in results["tasks"].items())
    print(f"success rate {results['success_rate']:.2f} [95% CI {lo:.2f}, {hi:.2f}] ({summary}); "
          f"latency p50 {results['latency_ms']['p50']:.2f} ms, p99 {results['latency_ms']['p99']:.2f} ms; "
          f"report: {cmd.out / 'eval.md'}")
