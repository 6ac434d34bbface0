#!/usr/bin/env python3
"""Opens keep-alive client connections to a proxy and reports its memory.

Each connection sends one request and reads the answer, then stays open and
idle. At each count in --counts (connections open at once) the resident
memory (VmRSS) of the processes in --pids is read from /proc and printed as
`count kib`. All connections are closed at the end.

Usage: hold_connections.py --host 127.0.0.1 --port 8080 --path /x \
           --pids 123,124 --counts 0,1000,10000
"""

import argparse
import asyncio
import resource
import sys


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


async def open_one(host, port, request):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    # Headers, then the body by its length.
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    return writer


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--pids", required=True)
    parser.add_argument("--counts", default="0,1000,10000")
    args = parser.parse_args()
    pids = [int(p) for p in args.pids.split(",") if p]
    counts = [int(c) for c in args.counts.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(counts) + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\n\r\n".encode()
    )
    writers = []
    for count in counts:
        while len(writers) < count:
            batch = min(200, count - len(writers))
            writers += await asyncio.gather(
                *(open_one(args.host, args.port, request) for _ in range(batch))
            )
        # Let the proxy settle (buffers freed after the answers).
        await asyncio.sleep(1)
        print(f"{count} {rss_kib(pids)}", flush=True)
    for writer in writers:
        writer.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as err:  # reported to the calling script
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
