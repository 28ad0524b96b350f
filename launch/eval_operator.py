"""``tether eval --operator``: evaluate a policy on hardware with an operator in the loop.

Protocol (after Diffusion Policy's ``eval_real_robot.py``, where a human starts each rollout,
stops it and judges it; and LeRobot's record keys). For each task and episode k (seed + k):

1. Reset prompt: the operator puts the scene in its start state and presses Enter; the robot
   server then resets (hardware: its home pose; a sim server: the seed's initial condition).
2. The policy runs until the operator presses a verdict key, or the server ends the episode (its
   step limit, or a simulator's success).
3. An episode that ended without a verdict (server, e-stop) waits for one: s / f / a / r.

Keys (read from the terminal in cbreak mode by the keyboard teleop's reader,
``tether.robot.teleop.keyboard``; any time, also during prompts):

=============  ===============================================================================
Enter          start the episode (at the reset prompt)
s              success: end the episode now, counted as a success
f              failure: end it now, counted as a failure
a              abort: end it now, not counted (kept in eval.json as ``aborted``)
r, Backspace   re-do: end it now, discard it, run the same seed again
Space          E-STOP: trip the robot server's latched e-stop (the episode ends; give a verdict)
c              clear the e-stop (after the scene is safe; needed before the next start)
Q, Esc         quit: stop now and write the report of the episodes judged so far
=============  ===============================================================================

The safety layer is the robot server's (``tether.robot.safety``): every command is checked and
limited there, whatever this process sends; its limits are printed at the start. An exception or
Ctrl-C during an episode trips the e-stop before this process exits.
"""

from __future__ import annotations

import select
import sys
import time
from collections import Counter

import numpy as np

from tether.launch.eval import (
    DEFAULT_ROBOT, EvalCommand, LinkStats, VideoQuota, load_runner, refusal_warnings, robot_keys,
    eval_live_view, run_episode, summarize, video_name, write_results,
)
from tether.robot.teleop.config import KeyboardOptions, TeleopConfig
from tether.robot.teleop.keyboard import KeyboardDevice

VERDICTS = {"s": "success", "f": "failure", "a": "aborted", "r": "redo", "backspace": "redo"}
QUIT = ("Q", "esc")
HELP = ("keys: Enter start | s success | f failure | a abort | r re-do | Space E-STOP | "
        "c clear e-stop | Q quit")


class OperatorKeys(KeyboardDevice):
    """The keyboard teleop device read for keys only (no axes): its cbreak handling, escape
    sequence parsing (``parse_keys``) and restore-on-exit.

    Args:
        fd: the terminal's file descriptor (default 0, standard input).

    Raises:
        TeleopError: from ``start`` when ``fd`` is not a terminal; from ``read_keys`` when the
            terminal went away.
    """

    def __init__(self, fd: int | None = None):
        super().__init__(None, TeleopConfig(keyboard=KeyboardOptions(fd=fd)))

    def read_keys(self, timeout_s: float) -> list[str]:
        """Key names pressed since the last call, waiting up to ``timeout_s`` for the first."""
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        return self._keys() if ready else []


class Operator:
    """The terminal side of the protocol: prompts, keys, and the e-stop on Space at all times."""

    def __init__(self, client, keys: OperatorKeys, out=None):
        self.client = client
        self.keys = keys
        self.out = out or sys.stdout
        self.estopped = False
        # The e-stop flag we asked the server for (trip or clear) and have not seen yet: states
        # published before our message took effect still carry the old flag.
        self._expect: bool | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def estop(self) -> None:
        self.client.estop("operator: Space key in tether eval")
        self.estopped, self._expect = True, True
        self.say("E-STOP tripped: the robot is stopped (latched). Make the scene safe, then press c "
                 "to clear it.")

    def poll(self, timeout_s: float = 0.0) -> list[str]:
        """Keys pressed, with Space (e-stop) and c (clear) acted on here."""
        keys = []
        for key in self.keys.read_keys(timeout_s):
            if key == "space":
                self.estop()
            elif key == "c" and self.estopped:
                self.client.clear_estop()
                self.estopped, self._expect = False, False
                self.say("e-stop cleared.")
            else:
                keys.append(key)
        return keys

    def follow(self) -> None:
        """Read the states queued so far: none pile up, and an e-stop tripped or cleared by
        another client (a supervisor, a teleop device) is followed."""
        while self.client.pending():
            flag = bool(self.client.next_state(0.1)["estop"])
            if self._expect is not None:
                if flag == self._expect:
                    self._expect = None
                continue
            if flag != self.estopped:
                self.estopped = flag
                self.say("The robot server's e-stop was tripped by another client." if flag
                         else "The robot server's e-stop was cleared by another client.")

    def wait_for(self, wanted: tuple[str, ...]) -> str:
        """Block until one of ``wanted`` is pressed (Space and c act meanwhile); returns it."""
        while True:
            keys = self.poll(0.05)
            self.follow()
            for key in keys:
                if key in wanted:
                    return key
                self.say(f"(key {key!r} does nothing here; {HELP})")


def evaluate_operator(cmd: EvalCommand, keys: OperatorKeys | None = None) -> dict:
    """Operator mode: run, write ``cmd.out/eval.*``; returns the content of eval.json.

    Raises:
        TeleopError: standard input is not a terminal. RobotLinkError, SpecMismatchError: as in
        robot-server mode.
    """
    from tether.robot.client import RobotClient
    from tether.robot.video import write_mp4

    cmd.out.mkdir(parents=True, exist_ok=True)
    runner, onnx_path, checkpoint = load_runner(cmd, cmd.out)
    tasks = list(cmd.tasks or runner.tasks)
    address = cmd.robot or DEFAULT_ROBOT
    keys = keys or OperatorKeys()
    keys.start()  # before connecting: no robot link without a working e-stop key
    episodes: list[dict] = []
    latencies: list[float] = []
    refused: Counter = Counter()  # of the recorded episodes' policy outputs
    sent = 0
    link = LinkStats()
    quota = VideoQuota(cmd.videos_per_task)
    redos = 0
    quit_early = False
    t0 = time.perf_counter()
    try:
        with RobotClient(address, spec=runner.spec, name="eval-operator", keys=robot_keys(cmd),
                         busy_wait=cmd.busy_wait) as client, \
                eval_live_view(cmd, client.spec) as view:
            client.spec.check_policy(runner.spec, tuple(tasks))
            op = Operator(client, keys)
            cameras = [k for k, f in client.spec.observation.items() if f.is_image]
            camera = cameras[0] if cameras and cmd.videos_per_task > 0 else None
            op.estopped = bool(client.latest_state()["estop"])
            safety = client.spec.safety
            limits = {k: v for k, v in safety.to_dict().items() if v not in (None, [], ())}
            op.say(f"Operator evaluation of {cmd.policy} on {address}: {len(tasks)} task(s) x "
                   f"{cmd.episodes} episodes.")
            op.say("Safety layer on (server side): action limits "
                   f"[{client.spec.action.low}, {client.spec.action.high}]"
                   + (f", {limits}" if limits else "; the spec sets no rate or workspace limits"))
            op.say(HELP)
            for task in tasks:
                for k in range(cmd.episodes):
                    seed = cmd.seed + k
                    while True:  # until the episode gets a verdict other than re-do
                        op.say(f"\n[{task} {k + 1}/{cmd.episodes}, seed {seed}] Reset the scene, "
                               "then press Enter to start (Space E-STOP, Q quit).")
                        while True:
                            key = op.wait_for(("enter",) + QUIT)
                            if key in QUIT or not op.estopped:
                                break
                            op.say("The e-stop is latched: press c to clear it when the scene is safe.")
                        if key in QUIT:
                            quit_early = True
                            break
                        op.say("running... (s success, f failure, a abort, r re-do, Space E-STOP)")

                        def should_stop(state: dict) -> str | None:
                            if op.estopped or state["estop"]:
                                return "estop"
                            for key in op.poll(0.0):
                                if key in VERDICTS:
                                    return VERDICTS[key]
                                if key in QUIT:
                                    return "quit"
                            return "estop" if op.estopped else None

                        film = camera if quota.want(task) else None
                        try:
                            r = run_episode(client, runner, task, seed, film, link, should_stop,
                                            cmd.action_steps, view=view)
                        except BaseException:
                            client.estop("tether eval --operator stopped by an error or Ctrl-C")
                            op.say("E-STOP tripped: tether eval is stopping.")
                            raise
                        latencies += r["latencies"]
                        verdict = r["stopped"]
                        if verdict in (None, "estop"):
                            why = "the e-stop" if verdict == "estop" else \
                                f"the robot server (success flag {r['success']})"
                            op.say(f"Episode ended by {why} after {r['length']} ticks. Verdict? "
                                   "s success, f failure, a abort, r re-do")
                            verdict = VERDICTS[op.wait_for(tuple(VERDICTS))]
                        if verdict == "quit":
                            quit_early = True
                            break
                        if verdict == "redo":
                            redos += 1
                            op.say("re-do: the same seed again.")
                            continue
                        episode = {"task": task, "index": k, "seed": seed, "status": verdict,
                                   "success": verdict == "success", "server_success": r["success"],
                                   "return": r["return"], "length": r["length"],
                                   "held_ticks": r["held_ticks"], "held_refused": r["held_refused"],
                                   "refused": r["refused"], "video": None}
                        if r["frames"] and verdict != "aborted" and quota.keep(task, episode["success"]):
                            path = cmd.out / "videos" / video_name(task, episode)
                            episode["video"] = str(write_mp4(path, np.stack(r["frames"]),
                                                             client.spec.control_rate_hz))
                        episodes.append(episode)
                        refused.update(r["refused"])
                        sent += r["sent"]
                        op.say(f"recorded: {verdict}.")
                        break
                    if quit_early:
                        break
                if quit_early:
                    break
            rate = client.spec.control_rate_hz
    finally:
        keys.stop()
    links = link.to_dict(rate)
    extra = {
        # which safety check refused the policy's outputs (the operator saw the robot hold)
        "warnings": refusal_warnings(episodes, dict(refused), sent, late=False),
        "safety_refusals": dict(refused),
        "robot": address,
        "onnx": str(onnx_path),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "link": {**links, "held_ticks": sum(e["held_ticks"] for e in episodes)},
        "control_period_ms": {k: links["period_ms"][k] for k in ("target", "p50", "p99")},
        "operator": {"redos": redos, "aborted": sum(e["status"] == "aborted" for e in episodes),
                     "quit_early": quit_early},
        "eval_s": time.perf_counter() - t0,
    }
    return write_results(cmd.out, summarize(cmd, "operator", tasks, episodes, latencies, extra))
