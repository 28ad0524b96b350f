"""``tether bench loop|record|policy|sim|finetune|fuzz``: benchmarks of the deployment path, of the
vectorized simulation and of online fine-tuning, each with its baselines, and the link's fuzzer.

Each lives in its own module: ``loop`` in ``bench_loop.py`` (the timing of the robot link with a
policy in the loop), ``record`` in ``bench_record.py``, ``policy`` in ``bench_policy.py``, ``sim`` in
``bench_sim.py``, ``finetune`` in ``bench_finetune.py``, ``fuzz`` in ``bench_fuzz.py``. This module
only assembles the command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Union

import tyro

from tether.launch.bench_finetune import FinetuneBench, bench_finetune
from tether.launch.bench_finetune import print_result as print_finetune
from tether.launch.bench_fuzz import FuzzBench, bench_fuzz
from tether.launch.bench_fuzz import print_result as print_fuzz
from tether.launch.bench_loop import LoopBench, bench_loop
from tether.launch.bench_loop import print_result as print_loop
from tether.launch.bench_policy import PolicyBench, bench_policy
from tether.launch.bench_policy import print_result as print_policy
from tether.launch.bench_record import RecordBench, bench_record
from tether.launch.bench_record import print_result as print_record
from tether.launch.bench_sim import SimBench, bench_sim
from tether.launch.bench_sim import print_result as print_sim


@dataclass
class BenchCommand:
    """Benchmarks: the control loop (rate, jitter, policy latency), recording (dropped frames),
    a policy's inference (ms per action, onnxruntime vs torch), the vectorized sim (env
    steps/s vs SyncVectorEnv and raw MuJoCo), the actor's control rate while a learner trains, or
    the robot link under a fuzzer (server exits, rejections by reason, tick periods)."""

    bench: tyro.conf.OmitArgPrefixes[tyro.conf.OmitSubcommandPrefixes[Union[
        Annotated[LoopBench, tyro.conf.subcommand("loop")],
        Annotated[RecordBench, tyro.conf.subcommand("record")],
        Annotated[PolicyBench, tyro.conf.subcommand("policy")],
        Annotated[SimBench, tyro.conf.subcommand("sim")],
        Annotated[FinetuneBench, tyro.conf.subcommand("finetune")],
        Annotated[FuzzBench, tyro.conf.subcommand("fuzz")],
    ]]]


def main(command: BenchCommand) -> None:
    """Entry point of ``tether bench``: run the chosen benchmark, print its summary (or its JSON)."""
    cmd = command.bench
    run, show = {LoopBench: (bench_loop, print_loop), RecordBench: (bench_record, print_record),
                 PolicyBench: (bench_policy, print_policy), SimBench: (bench_sim, print_sim),
                 FinetuneBench: (bench_finetune, print_finetune), FuzzBench: (bench_fuzz, print_fuzz)}[type(cmd)]
    result = run(cmd)
    print(json.dumps(result, indent=2)) if cmd.json else show(result)
