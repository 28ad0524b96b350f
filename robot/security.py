"""CurveZMQ security for the robot link (RFC 26/CurveZMQ through libzmq, ZAP through pyzmq's
``ThreadAuthenticator``).

The server has a key pair and an allow-list: a folder of client public-key certificates (the
``NAME.key`` files ``tether keys generate`` writes). Both its sockets (commands and state) are Curve
servers, so a client whose key is not allowed can neither command the robot nor read its state:
the handshake fails before any message is delivered. A client needs its own key pair and the
server's public key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from tether.robot import protocol


class InsecureBindError(RuntimeError):
    """Binding a robot server to a non-loopback address without Curve keys."""


def generate_keypair(directory: Path | str, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public, shareable) and ``NAME.key_secret`` (keep private) into
    ``directory``; returns their paths. Raises FileExistsError rather than overwrite a key."""
    directory = Path(directory)
    if (directory / f"{name}.key").exists() or (directory / f"{name}.key_secret").exists():
        raise FileExistsError(f"{directory / name}.key already exists: choose another name")
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory, name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


def load_keypair(secret_file: Path | str) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``.key_secret`` certificate.

    Raises:
        ValueError: the file holds no secret key (e.g. a public ``.key`` was given).
    """
    public, secret = zmq.auth.load_certificate(secret_file)
    if secret is None:
        raise ValueError(f"{secret_file} holds no secret key: pass the .key_secret file")
    return public, secret


def load_public_key(file: Path | str) -> bytes:
    """The Z85 public key of a ``.key`` (or ``.key_secret``) certificate."""
    return zmq.auth.load_certificate(file)[0]


def is_loopback(address: str) -> bool:
    """Whether a robot address only accepts connections from this machine."""
    if address.startswith("ipc://"):
        return True
    host = protocol.endpoints(address)[0][len("tcp://") :].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or interface name: assume reachable from outside


@dataclass
class ServerKeys:
    """A server's key pair and the folder of allowed client public keys."""

    secret_file: Path
    allowed_clients: Path

    def secure(self, context: zmq.Context, sockets: list[zmq.Socket]) -> ThreadAuthenticator:
        """Start ZAP on ``context`` with the allow-list and make ``sockets`` Curve servers.

        Raises:
            FileNotFoundError: the allow-list folder does not exist.
        """
        if not Path(self.allowed_clients).is_dir():
            raise FileNotFoundError(f"allowed-clients folder {self.allowed_clients} does not exist")
        public, secret = load_keypair(self.secret_file)
        auth = ThreadAuthenticator(context)
        auth.start()
        auth.configure_curve(domain="*", location=str(self.allowed_clients))
        for sock in sockets:
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True
        return auth


@dataclass
class ClientKeys:
    """A client's key pair and the server's public key."""

    secret_file: Path
    server_public: Path

    def secure(self, sockets: list[zmq.Socket]) -> None:
        """Make ``sockets`` Curve clients of the server (before they connect)."""
        public, secret = load_keypair(self.secret_file)
        server = load_public_key(self.server_public)
        for sock in sockets:
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_serverkey = server
