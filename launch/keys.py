"""``tether keys generate``: CurveZMQ key pairs for robot servers and their clients."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from tether.robot.security import generate_keypair


@dataclass
class KeysCommand:
    """Generate a CurveZMQ key pair (NAME.key public, NAME.key_secret private)."""

    action: tyro.conf.Positional[Literal["generate"]]
    name: str = "robot"
    """Name of the key pair, e.g. robot, or the client's name."""
    dir: Path = Path("keys")
    """Folder to write to. Give the server a folder of allowed clients' .key files."""


def main(cmd: KeysCommand) -> None:
    """Entry point of ``tether keys generate``: write a CurveZMQ key pair and print its paths."""
    public, secret = generate_keypair(cmd.dir, cmd.name)
    print(f"public key: {public} (share it)\nsecret key: {secret} (keep it on this machine)")
