"""A socket server in its own process, for measuring what request headers cost it in memory.

Usage: python _buffer_probe.py SOCKET_DIR CLIENTS ANNOUNCED_MIB SENT_KIB [hold]

Starts a :class:`SocketServer` (a stub supervisor: nothing else allocates), then opens CLIENTS
connections, each sending one INFER header that announces ANNOUNCED_MIB MiB of body followed by
SENT_KIB KiB of it. Without ``hold`` the clients go one after the other and each half-closes
and waits until the server has dropped it (so the server has read its header and body bytes);
the measure is the peak RSS (VmHWM). With ``hold`` they stay open together and the measure is
the RSS once the server says it holds their bytes (``buffered_bytes``), or after 2 s. Prints
one JSON line: ``{"before_kib", "after_kib", "measure", "statistics"}``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

from vigil.service import _protocol as P
from vigil.service._server import SocketServer


class _Log:
    def annotate(self, key: str, text: str) -> None:
        pass


class _Stub:
    log: Any = _Log()
    state = "NORMAL"

    def infer(self, x: Any, *, request_id: bytes | None = None) -> Any:
        raise AssertionError("no request is ever complete here")

    def statistics(self) -> Any:
        return None


def _kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def main() -> None:
    sock_dir, clients, mib, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    hold = sys.argv[5:] == ["hold"]
    path = os.path.join(sock_dir, "probe.sock")
    length = mib << 20
    head = P.HEADER.pack(P.MAGIC, P.VERSION, int(P.FrameType.INFER), 0, bytes(16), length, 0)
    server = SocketServer(_Stub(), path, max_clients=clients + 1, read_timeout_s=30.0)
    server.start()
    measure = "VmRSS" if hold else "VmHWM"
    before = _kib(measure)
    held = []
    for _ in range(clients):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(30.0)
        c.connect(path)
        c.sendall(head + bytes(kib << 10))
        if hold:
            held.append(c)
            continue
        c.shutdown(socket.SHUT_WR)
        while c.recv(4096):  # the server drops it (a truncated frame): it has read it all
            pass
        c.close()
    if hold:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # a measuring tool, not a test: it may poll
            if server.statistics().get("buffered_bytes", 0) >= clients * (kib << 10):
                break
            time.sleep(0.01)
    after = _kib(measure)
    stats = server.statistics()
    for c in held:
        c.close()
    server.stop(1.0)
    print(json.dumps({"before_kib": before, "after_kib": after, "measure": measure, **stats}))


if __name__ == "__main__":
    main()
