"""``tether finetune``: online fine-tuning on a robot, an actor and a learner over ZeroMQ.

::

    tether finetune run --robot tcp://ROBOT:5555 --policy runs/calql/policy.pt --algo wsrl --reward sim
    tether finetune run --robot ADDRESS --policy CKPT --algo rlpd --dataset DATA   # 50% offline batches
    tether finetune learner CKPT --address tcp://0.0.0.0:5600 --out runs/ft --algo wsrl   # torch machine
    tether finetune actor --robot tcp://127.0.0.1:5555 --learner tcp://LEARNER:5600 --out runs/ft   # robot

``run`` starts the actor as a second process (``tether finetune actor``, onnxruntime only) and
runs the learner in this one, with a live line: episodes, success and return (last 10),
intervention rate, UTD, weights version. Outputs under ``--out``: ``weights/vN.onnx``,
``progress.jsonl``, ``episodes.json``, ``finetune.png`` (curves), ``policy.onnx`` (the fine-tuned
mean policy, for ``tether eval``), ``learner.pt`` and ``buffer.npz`` (a restarted learner resumes
from them), ``actor.log``.

Algorithms: WSRL (Zhou et al., ICLR 2025), RLPD (Ball et al., ICML 2023), Cal-QL (Nakamoto et
al., 2023); see ``tether.policies.learner``. Rewards: ``sim``, the robot's own (a success classifier or VLM
reward source is not built yet, so it is not offered).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal, Union

import tyro

from tether.launch import UsageError
from tether.policies.configs import OnlineConfig

Algo = Literal["wsrl", "rlpd", "calql"]
Reward = Literal["sim"]


@dataclass
class _LearnerArgs:
    algo: Algo = "wsrl"
    """wsrl: warm-up then SAC on online data only; rlpd: SAC on 50% offline batches; calql: Cal-QL
    continued online (shorthand for --online.algo)."""
    reward: Reward = "sim"
    """sim: the robot's own reward (each state's reward and success)."""
    dataset: Path | None = None
    """Offline dataset for rlpd and calql (their offline half of each batch)."""
    online: OnlineConfig = field(default_factory=OnlineConfig)
    threads: int = 1
    """torch threads of the learner (the actor keeps a core)."""


@dataclass
class Run(_LearnerArgs):
    """The actor (a second process) and the learner (this one) on a robot server."""

    robot: str = "tcp://127.0.0.1:5555"
    """Address of the robot server (tether serve)."""
    policy: Path = Path("runs/train/policy.pt")
    """The Cal-QL checkpoint to start from (tether train --algo calql)."""
    out: Path = Path("runs/finetune")
    learner: str | None = None
    """Where the learner binds; default a free loopback port."""
    episodes: int = 100
    """Episodes the actor runs."""
    task: str | None = None
    seed: int = 0
    swap_every_steps: int = 0
    """Also swap weights inside an episode every this many steps (0: at episode ends only)."""


@dataclass
class LearnerCommand(_LearnerArgs):
    """The learner alone (torch): trains on what actors send, publishes ONNX weights."""

    checkpoint: tyro.conf.Positional[Path] = Path("runs/train/policy.pt")
    """The Cal-QL checkpoint to start from."""
    address: str = "tcp://127.0.0.1:5600"
    """Where to bind (actors connect)."""
    out: Path = Path("runs/finetune")
    updates: int | None = None
    """Stop after this many gradient updates (default: until Ctrl-C)."""
    duration_s: float | None = None


@dataclass
class ActorCommand:
    """The actor alone (no torch): runs the policy on the robot, streams transitions."""

    robot: str = "tcp://127.0.0.1:5555"
    learner: str = "tcp://127.0.0.1:5600"
    out: Path = Path("runs/finetune")
    policy: Path | None = None
    """Initial ONNX policy (version 0); default: wait for the learner's weights."""
    episodes: int | None = None
    """Episodes to run (default: until Ctrl-C)."""
    task: str | None = None
    seed: int = 0
    exploration_std: float = 0.0
    """Gaussian noise for a deterministic policy (fraction of the action half range)."""
    swap_every_steps: int = 0
    wait_s: float = 120.0
    """How long to wait for the learner's first weights (without --policy)."""
    client_key: Path | None = None
    """This client's secret key (.key_secret), for a server with CurveZMQ keys."""
    server_public_key: Path | None = None


FinetuneVerb = Union[
    Annotated[Run, tyro.conf.subcommand("run")],
    Annotated[LearnerCommand, tyro.conf.subcommand("learner")],
    Annotated[ActorCommand, tyro.conf.subcommand("actor")],
]


@dataclass
class FinetuneCommand:
    """Online fine-tuning: WSRL, RLPD or Cal-QL, an actor on the robot and a torch learner."""

    verb: tyro.conf.OmitSubcommandPrefixes[FinetuneVerb]


def _check(args: _LearnerArgs, checkpoint: Path) -> OnlineConfig:
    if not checkpoint.exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    return replace(args.online, algo=args.algo)


def _line(p) -> str:
    return (f"{p.phase} | episodes {p.episodes} | success {p.success:.2f} | return {p.ret:.2f} | "
            f"interventions {p.intervention_rate:.2f} | UTD {p.utd:.2f} | updates {p.updates} | v{p.version}")


def _learn(args: _LearnerArgs, checkpoint: Path, address: str, out: Path, stop, max_updates=None, duration_s=None):
    import torch

    from tether.policies.learner import Learner
    from rich.live import Live

    torch.set_num_threads(args.threads)
    cfg = _check(args, checkpoint)
    learner = Learner(checkpoint, cfg, address, out, dataset=args.dataset, reward=args.reward)
    with Live("starting the learner", refresh_per_second=4, transient=False) as live:
        progress = learner.run(stop, max_updates, duration_s, on_progress=lambda p: live.update(_line(p)))
    return learner, progress


def run_both(cmd: Run) -> dict:
    """``tether finetune run``: returns the last progress as a dict."""
    from dataclasses import asdict

    from tether.launch.processes import free_tcp_address, start, stop as stop_process

    if cmd.episodes < 1:
        raise UsageError("--episodes must be >= 1")
    _check(cmd, cmd.policy)
    address = cmd.learner or free_tcp_address()
    cmd.out.mkdir(parents=True, exist_ok=True)
    args = ["finetune", "actor", "--robot", cmd.robot, "--learner", address, "--out", str(cmd.out),
            "--episodes", str(cmd.episodes), "--seed", str(cmd.seed), "--swap-every-steps", str(cmd.swap_every_steps)]
    if cmd.task:
        args += ["--task", cmd.task]
    actor = start(args, cmd.out / "actor.log")
    done = threading.Event()

    def watch():
        actor.wait()
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        learner, progress = _learn(cmd, cmd.policy, address, cmd.out, done)
    finally:
        stop_process(actor)
    if actor.returncode not in (0, None):
        tail = (cmd.out / "actor.log").read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"the actor exited with code {actor.returncode}: {tail[0]}")
    return asdict(progress)


def run_actor(cmd: ActorCommand) -> None:
    from tether.robot.actor import Actor

    keys = None
    if cmd.client_key is not None:
        from tether.robot.security import ClientKeys

        if cmd.server_public_key is None:
            raise UsageError("--client-key needs --server-public-key")
        keys = ClientKeys(cmd.client_key, cmd.server_public_key)
    actor = Actor(cmd.robot, cmd.learner, cmd.out, cmd.policy, cmd.task, cmd.seed, cmd.exploration_std,
                  cmd.swap_every_steps, robot_keys=keys)
    stop = threading.Event()
    t0 = time.monotonic()

    def report(end: dict) -> None:
        print(f"episode {len(actor.stats.episodes)}: success {end['success']}, return {end['return']:.2f}, "
              f"{end['length']} steps, weights v{end['version']} ({time.monotonic() - t0:.0f} s)", flush=True)

    try:
        stats = actor.run(cmd.episodes, stop=stop, wait_s=cmd.wait_s, on_episode=report)
    except KeyboardInterrupt:
        stop.set()
        stats = actor.stats
    finally:
        actor.close()
    print(f"actor: {len(stats.episodes)} episodes, {stats.steps} steps, {stats.swaps} weight swaps, "
          f"{stats.messages_dropped} messages dropped, {len(stats.refused)} weights refused", flush=True)


def main(cmd: FinetuneCommand) -> None:
    verb = cmd.verb
    if isinstance(verb, ActorCommand):
        run_actor(verb)
    elif isinstance(verb, LearnerCommand):
        stop = threading.Event()
        try:
            _learn(verb, verb.checkpoint, verb.address, verb.out, stop, verb.updates, verb.duration_s)
        except KeyboardInterrupt:
            stop.set()
    else:
        p = run_both(verb)
        print(f"\nfine-tuned ({verb.algo}): {p['episodes']} episodes, success {p['success']:.2f} (last 10), "
              f"{p['updates']} updates, weights v{p['version']} -> {verb.out / 'policy.onnx'}, "
              f"{verb.out / 'finetune.png'}")
