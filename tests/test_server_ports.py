"""`free_port` hands out ports the kernel never picks by itself, so no other test takes them."""

from __future__ import annotations

import socket

from tests.server import _ephemeral_ports, free_port


def test_free_ports_lie_outside_the_ephemeral_range_and_can_be_bound() -> None:
    ephemeral = _ephemeral_ports()
    ports = [free_port() for _ in range(200)]
    assert [] == [port for port in ports if port in ephemeral]
    assert len(set(ports)) > 150, "ports are drawn at random, so parallel callers rarely meet"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))
