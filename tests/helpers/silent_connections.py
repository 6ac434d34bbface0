#!/usr/bin/env python3
"""Opens many TCP connections that never send a byte, and holds them.

Used by tests/tests/connections.rs: a flood of silent clients from several
loopback addresses (a test process cannot hold them all itself, its file
descriptors are bounded). Prints one line, `opened N`, once every connect
has completed or failed, then keeps the sockets until stdin closes.
"""

import argparse
import resource
import selectors
import socket
import sys
import time

BURST = 250
BURST_PAUSE_SECS = 0.02


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sources", required=True, help="comma-separated source addresses")
    parser.add_argument("--per-source", type=int, required=True)
    parser.add_argument("--deadline-secs", type=float, default=60.0)
    args = parser.parse_args()
    # A socket per connection: take all the descriptors we may.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    selector = selectors.DefaultSelector()  # epoll: thousands of sockets
    sockets = []
    sources = args.sources.split(",")
    for index in range(args.per_source * len(sources)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((sources[index % len(sources)], 0))
        sock.connect_ex(("127.0.0.1", args.port))
        selector.register(sock, selectors.EVENT_WRITE)
        sockets.append(sock)
        # In bursts the server's accept loop keeps up with: a handshake
        # completed while its accept queue is full is dropped by the
        # server, yet looks open from here.
        if index % BURST == BURST - 1:
            time.sleep(BURST_PAUSE_SECS)

    # A connect completes when the socket turns writable (error or not);
    # ones the server's accept queue holds back stay pending.
    pending = len(sockets)
    opened = 0
    deadline = time.monotonic() + args.deadline_secs
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            selector.unregister(key.fileobj)
            pending -= 1
            if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                opened += 1
    print(f"opened {opened}", flush=True)
    sys.stdin.read()  # hold everything until the test lets go
    return 0


if __name__ == "__main__":
    sys.exit(main())
