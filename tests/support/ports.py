"""Free loopback ports for servers started by tests.

Ports come from below the kernel's ephemeral range (32768-60999 here), so a port picked
now cannot be taken meanwhile by an outgoing connection's local port; a random start per
call keeps parallel test workers apart.
"""

from __future__ import annotations

import random
import socket

_LOW, _HIGH = 20000, 32000


def free_port() -> int:
    for _ in range(200):
        port = random.randint(_LOW, _HIGH)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")
