"""Run one servo-bus emulator in its own process (as the arm is: the driver's SDK on one side of
the serial port, the servos on the other), print its port, and serve until SIGINT / SIGTERM.

    python -m tether.robot.drivers.emulators sts --ids 1 2 3 4 5 6 --config-out arm.json

``--config-out FILE`` also writes the zero-pose calibration of the emulated arm (next to FILE,
``FILE.calib.json``) and an arm config naming the port and that calibration, so that ``tether
serve --robot feetech --robot-config FILE`` (or ``dynamixel``) drives it at once. The first line
printed is ``port /dev/pts/N``; a line ``ready`` follows when the files are written.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tether.robot.drivers.emulators",
                                     description="Run a servo-bus emulator on a pseudo-terminal.")
    parser.add_argument("bus", choices=["sts", "dynamixel"], help="sts: Feetech STS3215; dynamixel: X-series")
    parser.add_argument("--ids", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6], help="servo IDs")
    parser.add_argument("--start-ticks", type=int, nargs="+", default=[2048],
                        help="raw encoder tick of each shaft (one value for all, or one per servo)")
    parser.add_argument("--config-out", type=Path, default=None,
                        help="write an arm config (port, ids, calibration) for tether serve here")
    parser.add_argument("--max-velocity", type=float, default=2.0, help="max_velocity_rad_s of the config (rad/s)")
    args = parser.parse_args(argv)
    if len(args.start_ticks) not in (1, len(args.ids)):
        parser.error(f"--start-ticks has {len(args.start_ticks)} values for {len(args.ids)} servos")
    return args


def make_bus(args: argparse.Namespace):
    """The emulator named by ``args.bus`` (not started) and its zero-pose calibration function."""
    starts = args.start_ticks if len(args.start_ticks) > 1 else args.start_ticks[0]
    if args.bus == "sts":
        from tether.robot.drivers.emulators.sts import STSBus, zero_pose_calibration

        return STSBus(args.ids, start_ticks=starts), zero_pose_calibration
    from tether.robot.drivers.emulators.dynamixel import ServoChain, zero_pose_calibration

    if len(args.start_ticks) > 1:
        raise SystemExit("the dynamixel emulator takes one --start-ticks value for all servos")
    return ServoChain(args.ids, start_ticks=starts), zero_pose_calibration


def write_config(bus, calibrate, args: argparse.Namespace) -> None:
    """The calibration (``<config>.calib.json``) and the arm config JSON at ``args.config_out``."""
    if args.bus == "sts" and len(args.ids) == 6:
        from tether.robot.drivers.feetech import SO101_JOINTS as names
    else:
        names = tuple(f"joint_{i}" for i in args.ids)
    calib_path = args.config_out.with_suffix(".calib.json")
    calibrate(bus, names).save(calib_path)
    config = {"port": bus.port, "ids": list(args.ids), "joint_names": list(names),
              "calibration": str(calib_path.resolve()), "max_velocity_rad_s": args.max_velocity}
    args.config_out.write_text(json.dumps(config, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    bus, calibrate = make_bus(args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with bus:
        print(f"port {bus.port}", flush=True)
        if args.config_out is not None:
            write_config(bus, calibrate, args)
        print("ready", flush=True)
        while not stop.wait(0.2):
            pass
    sys.stdout.flush()


if __name__ == "__main__":
    main()
