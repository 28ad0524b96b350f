"""Launch files: a multi-process set-up (robot server, teleop, recorder, policy, learner) in YAML.

A launch file names processes, how to start them, what each waits for, how each is checked for
health, what happens when one exits, and which one is the robot (held / e-stopped first on
shutdown). ``tether launch FILE.yaml`` runs it (``tether.launch.supervisor``); ``--dry-run``
prints the resolved process graph. The schema, by example::

    description: point-mass robot and a teleop session    # optional
    vars:                        # strings, substituted as ${vars.NAME}; --set NAME=VALUE overrides
      robot: ${free_address}     # a fresh loopback tcp://127.0.0.1:PORT (PORT and PORT+1 free)
      dataset: runs/teleop
    processes:                   # started in dependency order (declaration order among equals)
      robot:
        cmd: tether serve --robot pointmass --address ${vars.robot}   # or a list of arguments
        role: robot              # e-stopped through its health address first on shutdown
        health: {robot: "${vars.robot}", timeout_s: 30}   # handshake; or `health: none`
        restart: on-failure      # no | on-failure | always, or a mapping:
                                 # {policy: on-failure, max_restarts: 3, backoff_s: 1.0}
      teleop:
        cmd: [tether, teleop, --robot, "${vars.robot}", --record, "${vars.dataset}"]
        depends_on: {robot: healthy}   # or a list of names (condition `started`)
        env: {MUJOCO_GL: egl}
        stdin: inherit           # this process reads the terminal (at most one may)
        critical: false          # true: its exit e-stops the robot and shuts the launch down
        on_exit: shutdown        # when it ends for good, the whole launch shuts down
        stop_timeout_s: 5        # s between SIGINT, SIGTERM and SIGKILL when stopping it

Substitutions (in ``cmd``, ``env`` values, ``cwd``, ``health.robot`` and the vars themselves):
``${vars.NAME}`` (a var declared above the one being defined), ``${env.NAME}`` (an environment
variable of ``tether launch``), ``${free_address}``, ``${file_dir}`` (the launch file's folder,
absolute); ``$${`` is a literal ``${``. A command's first word ``tether`` runs this tether
(``python -m tether.launch.cli``), and ``python`` / ``python3`` this interpreter.

Every mistake (an unknown key, a wrong type, a dependency on an unknown process, a cycle in
``depends_on``, an unknown substitution) raises ``LaunchFileError`` naming the file and field.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tether.launch import UsageError
from tether.launch.processes import free_tcp_address

RestartPolicy = Literal["no", "on-failure", "always"]
Condition = Literal["started", "healthy"]

RESTART_POLICIES = ("no", "on-failure", "always")
CONDITIONS = ("started", "healthy")
ROLES = ("robot",)


class LaunchFileError(UsageError):
    """A launch file that cannot be run: bad YAML, unknown key, wrong type, unknown dependency,
    cycle, unknown substitution. The message names the file and the field."""


@dataclass(frozen=True)
class Health:
    """How a process is known to be up.

    Attributes:
        robot: address of a robot server whose handshake (``RobotClient.connect``) is the health
            check; None: the process is healthy once started.
        timeout_s: how long to wait for the first successful check, s.
        client_key, server_public_key: Curve keys for a secured robot server (as ``tether eval``).
    """

    robot: str | None = None
    timeout_s: float = 30.0
    client_key: Path | None = None
    server_public_key: Path | None = None


@dataclass(frozen=True)
class Restart:
    """What happens when a process exits before shutdown.

    Attributes:
        policy: ``no`` (never restarted), ``on-failure`` (restarted after a non-zero exit code or a
            signal), ``always`` (restarted after any exit).
        max_restarts: restarts allowed over the launch's life; then the process ends for good.
        backoff_s: delay before the first restart, s; doubled for each further one.
        max_backoff_s: cap on the delay, s.
    """

    policy: RestartPolicy = "no"
    max_restarts: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def delay_s(self, restarts_done: int) -> float:
        """Delay before restart number ``restarts_done + 1``, s (exponential backoff)."""
        return min(self.backoff_s * 2**restarts_done, self.max_backoff_s)

    def wants_restart(self, returncode: int, restarts_done: int) -> bool:
        """Whether an exit with ``returncode`` (negative: killed by that signal) is restarted."""
        if restarts_done >= self.max_restarts:
            return False
        return self.policy == "always" or (self.policy == "on-failure" and returncode != 0)


@dataclass(frozen=True)
class Process:
    """One process of a launch file, with every substitution resolved.

    Attributes:
        name: the key under ``processes`` (the ``[name]`` prefix of its output).
        argv: the command line to execute (``tether`` / ``python`` already mapped to this
            interpreter).
        cmd: the command as written after substitution (for display).
        env: variables added to the launcher's environment.
        cwd: working folder; None: the launcher's.
        depends_on: dependency name -> condition (``started`` or ``healthy``).
        health: the health check.
        restart: the restart policy.
        role: ``robot`` for a robot server (held / e-stopped first, stopped last), else None.
        critical: never restarted; its exit latches the robot's e-stop and shuts the launch down.
        on_exit: ``shutdown``: when it ends for good (exits and is not restarted) the launch shuts
            down; ``continue``: the others go on.
        stdin: ``inherit`` (reads the launcher's terminal) or ``none``.
        stop_timeout_s: s to wait after SIGINT, then after SIGTERM, before SIGKILL.
    """

    name: str
    argv: tuple[str, ...]
    cmd: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    depends_on: dict[str, Condition] = field(default_factory=dict)
    health: Health = Health()
    restart: Restart = Restart()
    role: str | None = None
    critical: bool = False
    on_exit: Literal["continue", "shutdown"] = "continue"
    stdin: Literal["none", "inherit"] = "none"
    stop_timeout_s: float = 5.0


@dataclass(frozen=True)
class LaunchFile:
    """A parsed, validated launch file.

    Attributes:
        path: the file it came from.
        description: free text.
        vars: the resolved variables, in declaration order.
        processes: in start order (a topological order of ``depends_on``; declaration order
            among processes that do not depend on each other).
    """

    path: Path
    description: str
    vars: dict[str, str]
    processes: tuple[Process, ...]

    def process(self, name: str) -> Process:
        """The process called ``name``.

        Raises:
            KeyError: no such process.
        """
        for p in self.processes:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def robots(self) -> tuple[Process, ...]:
        """The processes with ``role: robot``."""
        return tuple(p for p in self.processes if p.role == "robot")


# ------------------------------------------------------------------------------------- parsing
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last one silently, which
    would drop a process without a word)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_TOP_KEYS = ("description", "vars", "processes")
_PROCESS_KEYS = (
    "cmd", "env", "cwd", "depends_on", "health", "restart", "role", "critical", "on_exit", "stdin",
    "stop_timeout_s",
)
_HEALTH_KEYS = ("robot", "timeout_s", "client_key", "server_public_key")
_RESTART_KEYS = ("policy", "max_restarts", "backoff_s", "max_backoff_s")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_SUBSTITUTION = re.compile(r"\$(\$)?\{([^}]*)\}")


class _Parser:
    """Turns the YAML tree of ``path`` into a ``LaunchFile``; every error names the field."""

    def __init__(self, path: Path, overrides: dict[str, str]):
        self.path = path
        self.overrides = overrides
        self.vars: dict[str, str] = {}

    def error(self, where: str, message: str) -> LaunchFileError:
        return LaunchFileError(f"{self.path}: {where}: {message}" if where else f"{self.path}: {message}")

    # -- generic checks
    def mapping(self, value: Any, where: str, keys: tuple[str, ...] | None) -> dict:
        if not isinstance(value, dict):
            raise self.error(where, f"expected a mapping, got {_kind(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.error(where, f"keys must be strings, got {key!r}")
            if keys is not None and key not in keys:
                raise self.error(f"{where}.{key}" if where else key,
                                 f"unknown key {key!r}; expected one of: {', '.join(keys)}")
        return value

    def string(self, value: Any, where: str) -> str:
        # Numbers and booleans are accepted as their YAML text would read (a port, a flag).
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (str, int, float)):
            return str(value)
        raise self.error(where, f"expected a string, got {_kind(value)}")

    def number(self, value: Any, where: str, minimum: float, integer: bool = False) -> float:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            raise self.error(where, f"expected {'an integer' if integer else 'a number'}, got {_kind(value)}")
        if value < minimum:
            raise self.error(where, f"must be >= {minimum}, got {value}")
        return value

    def choice(self, value: Any, where: str, choices: tuple[str, ...]) -> str:
        # YAML 1.1 reads a bare `no` as False; `restart: no` is what a user writes.
        if value is False and "no" in choices:
            value = "no"
        if not isinstance(value, str) or value not in choices:
            raise self.error(where, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(where, f"expected true or false, got {value!r}")
        return value

    # -- substitution
    def substitute(self, text: str, where: str) -> str:
        def replace(m: re.Match) -> str:
            if m.group(1):  # $${...}: a literal ${...}
                return "${" + m.group(2) + "}"
            ref = m.group(2).strip()
            if ref == "free_address":
                return free_tcp_address()
            if ref == "file_dir":
                return str(self.path.resolve().parent)
            scope, _, name = ref.partition(".")
            if scope == "vars" and name:
                if name not in self.vars:
                    known = ", ".join(self.vars) or "none"
                    raise self.error(where, f"${{{ref}}}: no var {name!r} defined before this "
                                            f"field (defined: {known})")
                return self.vars[name]
            if scope == "env" and name:
                if name not in os.environ:
                    raise self.error(where, f"${{{ref}}}: environment variable {name!r} is not set")
                return os.environ[name]
            raise self.error(where, f"unknown substitution ${{{ref}}}; expected ${{vars.NAME}}, "
                                    "${env.NAME}, ${free_address} or ${file_dir}")

        return _SUBSTITUTION.sub(replace, text)

    # -- sections
    def parse(self, doc: Any) -> LaunchFile:
        doc = self.mapping(doc, "", _TOP_KEYS)
        description = self.string(doc.get("description", ""), "description")
        self.parse_vars(doc.get("vars") or {})
        if "processes" not in doc or not doc["processes"]:
            raise self.error("processes", "at least one process is needed")
        raw = self.mapping(doc["processes"], "processes", None)
        processes = {}
        for name, spec in raw.items():
            if not _NAME.match(name):
                raise self.error(f"processes.{name}", "a process name is letters, digits, '_' and "
                                                      "'-', starting with a letter or '_'")
            processes[name] = self.parse_process(name, spec)
        self.check_graph(processes)
        inheriting = [p.name for p in processes.values() if p.stdin == "inherit"]
        if len(inheriting) > 1:
            raise self.error("processes", f"only one process can read the terminal "
                                          f"(stdin: inherit), got {', '.join(inheriting)}")
        order = _start_order(processes)
        return LaunchFile(self.path, description, dict(self.vars), tuple(processes[n] for n in order))

    def parse_vars(self, raw: Any) -> None:
        raw = self.mapping(raw, "vars", None)
        unknown = sorted(set(self.overrides) - set(raw))
        if unknown:
            raise LaunchFileError(
                f"{self.path}: --set {unknown[0]}: no such var in the file "
                f"(vars: {', '.join(raw) or 'none'})"
            )
        for name, value in raw.items():
            where = f"vars.{name}"
            if not _NAME.match(name):
                raise self.error(where, "a var name is letters, digits, '_' and '-'")
            text = self.overrides[name] if name in self.overrides else self.string(value, where)
            self.vars[name] = self.substitute(text, where)

    def parse_process(self, name: str, spec: Any) -> Process:
        where = f"processes.{name}"
        spec = self.mapping(spec, where, _PROCESS_KEYS)
        if "cmd" not in spec:
            raise self.error(f"{where}.cmd", "missing: the command to run")
        argv = self.parse_cmd(spec["cmd"], f"{where}.cmd")
        env = {
            self.string(k, f"{where}.env"): self.substitute(self.string(v, f"{where}.env.{k}"), f"{where}.env.{k}")
            for k, v in self.mapping(spec.get("env") or {}, f"{where}.env", None).items()
        }
        cwd = spec.get("cwd")
        if cwd is not None:
            cwd = Path(self.substitute(self.string(cwd, f"{where}.cwd"), f"{where}.cwd"))
        role = spec.get("role")
        if role is not None:
            role = self.choice(role, f"{where}.role", ROLES)
        health = self.parse_health(spec.get("health", "none"), f"{where}.health")
        if role == "robot" and health.robot is None:
            raise self.error(f"{where}.health", "a process with role robot needs health.robot "
                                                "(its address: the handshake, and the e-stop on shutdown)")
        critical = self.boolean(spec.get("critical", False), f"{where}.critical")
        restart = self.parse_restart(spec.get("restart", "no"), f"{where}.restart")
        if critical and (role == "robot" or restart.policy != "no"):
            raise self.error(f"{where}.critical", "a critical process is never restarted and is not "
                                                  "the robot: its exit e-stops the robot and shuts "
                                                  "the launch down (drop `restart` or `role`)")
        on_exit_default = "shutdown" if role == "robot" else "continue"
        return Process(
            name=name,
            argv=tuple(_resolve_program(argv)),
            cmd=shlex.join(argv),
            env=env,
            cwd=cwd,
            depends_on=self.parse_depends(spec.get("depends_on") or {}, f"{where}.depends_on"),
            health=health,
            restart=restart,
            role=role,
            critical=critical,
            on_exit=self.choice(spec.get("on_exit", on_exit_default), f"{where}.on_exit", ("continue", "shutdown")),
            stdin=self.choice(spec.get("stdin", "none"), f"{where}.stdin", ("none", "inherit")),
            stop_timeout_s=float(self.number(spec.get("stop_timeout_s", 5.0), f"{where}.stop_timeout_s", 0.0)),
        )

    def parse_cmd(self, cmd: Any, where: str) -> list[str]:
        if isinstance(cmd, str):
            text = self.substitute(cmd, where)
            try:
                argv = shlex.split(text)
            except ValueError as e:  # unbalanced quotes
                raise self.error(where, f"cannot split the command line: {e}") from None
        elif isinstance(cmd, list):
            argv = [self.substitute(self.string(a, f"{where}[{i}]"), f"{where}[{i}]") for i, a in enumerate(cmd)]
        else:
            raise self.error(where, f"expected a command line or a list of arguments, got {_kind(cmd)}")
        if not argv:
            raise self.error(where, "the command is empty")
        return argv

    def parse_depends(self, raw: Any, where: str) -> dict[str, Condition]:
        if isinstance(raw, list):
            return {self.string(n, f"{where}[{i}]"): "started" for i, n in enumerate(raw)}
        raw = self.mapping(raw, where, None)
        out = {}
        for dep, condition in raw.items():
            if isinstance(condition, dict):  # docker compose's {condition: healthy}
                condition = self.mapping(condition, f"{where}.{dep}", ("condition",)).get("condition", "started")
            out[dep] = self.choice(condition, f"{where}.{dep}", CONDITIONS)
        return out

    def parse_health(self, raw: Any, where: str) -> Health:
        if raw is None or raw == "none":
            return Health()
        raw = self.mapping(raw, where, _HEALTH_KEYS)
        if "robot" not in raw:
            raise self.error(f"{where}.robot", "missing: the robot server address to handshake with "
                                               "(or write `health: none`)")
        keys = {}
        for key in ("client_key", "server_public_key"):
            if raw.get(key) is not None:
                keys[key] = Path(self.substitute(self.string(raw[key], f"{where}.{key}"), f"{where}.{key}"))
        if len(keys) == 1:
            raise self.error(where, "client_key and server_public_key go together")
        return Health(
            robot=self.substitute(self.string(raw["robot"], f"{where}.robot"), f"{where}.robot"),
            timeout_s=float(self.number(raw.get("timeout_s", 30.0), f"{where}.timeout_s", 0.1)),
            **keys,
        )

    def parse_restart(self, raw: Any, where: str) -> Restart:
        if not isinstance(raw, dict):
            return Restart(self.choice(raw, where, RESTART_POLICIES))
        raw = self.mapping(raw, where, _RESTART_KEYS)
        return Restart(
            policy=self.choice(raw.get("policy", "on-failure"), f"{where}.policy", RESTART_POLICIES),
            max_restarts=int(self.number(raw.get("max_restarts", 3), f"{where}.max_restarts", 0, integer=True)),
            backoff_s=float(self.number(raw.get("backoff_s", 1.0), f"{where}.backoff_s", 0.0)),
            max_backoff_s=float(self.number(raw.get("max_backoff_s", 30.0), f"{where}.max_backoff_s", 0.0)),
        )

    def check_graph(self, processes: dict[str, Process]) -> None:
        for p in processes.values():
            for dep in p.depends_on:
                if dep == p.name:
                    raise self.error(f"processes.{p.name}.depends_on", "a process cannot depend on itself")
                if dep not in processes:
                    raise self.error(f"processes.{p.name}.depends_on",
                                     f"unknown process {dep!r}; processes: {', '.join(processes)}")
                if p.depends_on[dep] == "healthy" and processes[dep].health.robot is None:
                    raise self.error(f"processes.{p.name}.depends_on.{dep}",
                                     f"condition healthy, but {dep!r} has no health check "
                                     "(give it `health: {robot: ADDRESS}` or use `started`)")
        cycle = _find_cycle({n: list(p.depends_on) for n, p in processes.items()})
        if cycle:
            raise self.error("processes", f"depends_on has a cycle: {' -> '.join(cycle)}")


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )


def _resolve_program(argv: list[str]) -> list[str]:
    """Run ``tether`` and ``python`` with this interpreter, so a launch uses the tether (and
    virtual environment) it was started from whatever PATH says."""
    if argv[0] == "tether":
        return [sys.executable, "-m", "tether.launch.cli", *argv[1:]]
    if argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return argv


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path that ends where it starts, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in graph[node]:
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None


def _start_order(processes: dict[str, Process]) -> list[str]:
    """Dependencies first; otherwise declaration order (graphlib would not keep it stable)."""
    order: list[str] = []
    remaining = list(processes)
    while remaining:
        ready = next(n for n in remaining if all(d in order for d in processes[n].depends_on))
        order.append(ready)
        remaining.remove(ready)
    return order


def parse_overrides(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``NAME=VALUE`` strings (``--set``) as a mapping.

    Raises:
        LaunchFileError: an item without ``=`` or with an empty name.
    """
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise LaunchFileError(f"--set takes NAME=VALUE (a var of the launch file), not {item!r}")
        out[name] = value
    return out


def load(path: Path | str, overrides: dict[str, str] | None = None) -> LaunchFile:
    """Read, validate and resolve the launch file at ``path``.

    Args:
        path: a YAML launch file.
        overrides: var name -> value, replacing the file's value (``--set``); substituted too.

    Raises:
        FileNotFoundError: no file at ``path``.
        LaunchFileError: invalid YAML or schema (the message names the file and the field).
    """
    path = Path(path)
    text = path.read_text()
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise LaunchFileError(f"{path}: {where}invalid YAML: {problem}") from None
    return _Parser(path, dict(overrides or {})).parse(doc)


def examples_dir() -> Path:
    """The folder of the launch files shipped with tether (``tether/launch/examples``)."""
    return Path(__file__).resolve().parent / "examples"
