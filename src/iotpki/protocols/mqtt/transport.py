"""What every MQTT connection of iotpki's sets on its socket (service, agent, benchmark)."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

__all__ = ["no_delay"]


def no_delay(_client: Any, _userdata: Any, sock: Any) -> None:
    """paho's ``on_socket_open``: send each packet at once. With Nagle's algorithm a request
    and its answer each wait for the peer's delayed ACK (40 ms) on the way."""
    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
