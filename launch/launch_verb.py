"""``tether launch FILE.yaml``: run a multi-process set-up from a launch file.

The schema is in ``tether.launch.launchfile``, what running it does in
``tether.launch.supervisor``. ``--dry-run`` prints the resolved process graph (start order,
dependencies, health checks, restart policies, shutdown order) and starts nothing. A FILE that
does not exist is looked up among the shipped examples (``tether launch sim_policy_eval.yaml``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from tether.launch.launchfile import LaunchFile, LaunchFileError, Process, examples_dir, load, parse_overrides


@dataclass
class LaunchCommand:
    """Run a launch file: start processes in dependency order, wait for health, stream prefixed
    logs, restart per policy; on Ctrl-C e-stop the robot first, then stop the rest."""

    file: tyro.conf.Positional[Path]
    """Launch file (YAML), or the name of a shipped example (sim_teleop_record.yaml,
    sim_policy_eval.yaml, robot_actor_learner.yaml)."""
    dry_run: bool = False
    """Print the process graph and start nothing."""
    set: tuple[str, ...] = ()
    """Override vars of the file: --set NAME=VALUE [NAME=VALUE ...]."""
    log_dir: Path | None = None
    """Also write each process's output to LOG_DIR/NAME.log and the supervisor's events to
    LOG_DIR/events.jsonl."""


def resolve_path(file: Path) -> Path:
    """``file`` itself when it exists, else the shipped example of that name (``.yaml`` optional).

    Raises:
        FileNotFoundError: neither exists.
    """
    if file.exists():
        return file
    for candidate in (examples_dir() / file.name, examples_dir() / f"{file.name}.yaml"):
        if file.parent == Path(".") and candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(p.name for p in examples_dir().glob("*.yaml")))
    raise FileNotFoundError(f"no launch file {file} (shipped examples: {shipped})")


def unknown_verbs(launch: LaunchFile) -> list[str]:
    """One line per process whose ``tether VERB`` is not a verb of this installation."""
    from tether.launch.cli import VERBS

    out = []
    for p in launch.processes:
        if p.argv[1:3] == ("-m", "tether.launch.cli") and len(p.argv) > 3 and p.argv[3] not in VERBS:
            out.append(f"{launch.path}: processes.{p.name}.cmd: `tether {p.argv[3]}` is not a verb "
                       f"of this tether (verbs: {', '.join(VERBS)})")
    return out


def _describe(p: Process) -> list[str]:
    lines = [f"cmd: {p.cmd}"]
    if p.depends_on:
        lines.append("depends on: " + ", ".join(f"{d} ({c})" for d, c in p.depends_on.items()))
    if p.health.robot:
        lines.append(f"health: robot handshake at {p.health.robot} (timeout {p.health.timeout_s:g} s)")
    else:
        lines.append("health: none (healthy once started)")
    r = p.restart
    if r.policy == "no":
        lines.append("restart: no")
    else:
        lines.append(f"restart: {r.policy}, at most {r.max_restarts}, backoff {r.backoff_s:g} s "
                     f"doubling up to {r.max_backoff_s:g} s")
    lines.append(f"on exit: {'e-stop the robot, then shut down' if p.critical else p.on_exit}")
    extras = [f"env {' '.join(f'{k}={v}' for k, v in p.env.items())}" if p.env else "",
              f"cwd {p.cwd}" if p.cwd else "", "reads the terminal" if p.stdin == "inherit" else ""]
    if any(extras):
        lines.append(", ".join(e for e in extras if e))
    return lines


def process_graph(launch: LaunchFile) -> Tree:
    """The launch as a rich tree: vars, processes in start order with their settings, and what
    Ctrl-C does. User text goes in as ``Text``, so brackets in a command are not rich markup."""
    title = Text.assemble(("launch ", "bold"), str(launch.path),
                          f": {launch.description}" if launch.description else "")
    tree = Tree(title)
    if launch.vars:
        branch = tree.add(Text("vars", "bold"))
        for name, value in launch.vars.items():
            branch.add(Text(f"{name} = {value}"))
    procs = tree.add(Text.assemble(("processes", "bold"), f" (start order, {len(launch.processes)})"))
    for i, p in enumerate(launch.processes, 1):
        tags = [t for t in (f"role {p.role}" if p.role else "", "critical" if p.critical else "") if t]
        node = procs.add(Text.assemble((f"{i}. {p.name}", "bold"), f" [{', '.join(tags)}]" if tags else ""))
        for line in _describe(p):
            node.add(Text(line))
    robots = [p.name for p in launch.robots]
    others = [p.name for p in reversed(launch.processes) if p.role != "robot"]
    steps = tree.add(Text("on Ctrl-C", "bold"))
    steps.add(Text(f"1. e-stop {', '.join(robots)}" if robots else "1. no robot role: nothing to e-stop"))
    if others:
        steps.add(Text(f"2. stop {', '.join(others)} (SIGINT, then SIGTERM, then SIGKILL)"))
    if robots:
        steps.add(Text(f"{3 if others else 2}. stop {', '.join(reversed(robots))} last"))
    return tree


def main(cmd: LaunchCommand) -> None:
    """Run (or with ``--dry-run`` print) the launch file; exits with the supervisor's code.

    Raises:
        FileNotFoundError: no such launch file.
        LaunchFileError: the file is invalid, or names a tether verb that does not exist.
    """
    launch = load(resolve_path(cmd.file), parse_overrides(cmd.set))
    problems = unknown_verbs(launch)
    console = Console(highlight=False, soft_wrap=True)
    if cmd.dry_run:
        console.print(process_graph(launch), soft_wrap=False)  # wrap long commands, never crop
        for line in problems:
            console.print(Text.assemble(("warning: ", "yellow"), line))
        return
    if problems:
        raise LaunchFileError(problems[0])
    from tether.launch.supervisor import Supervisor

    sys.exit(Supervisor(launch, console, cmd.log_dir).run())


__all__ = ["LaunchCommand", "LaunchFileError", "main", "process_graph", "resolve_path"]
