"""A webhook subscriber for scripts/bench/user.sh: accepts every delivery
(200), and logs one line per delivery — the time it arrived and the event's
`occurred_at` and id — so the benchmark can count deliveries per second and
the delay from a change's commit to its delivery. Loopback only.

Usage: webhook_sink.py PORT LOGFILE
"""

import json
import sys
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (http.server's naming)
        arrived = time.time()
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        occurred = datetime.fromisoformat(body["occurred_at"].replace("Z", "+00:00")).timestamp()
        self.server.log.write(f"{arrived:.6f} {occurred:.6f} {body['id']}\n")
        self.server.log.flush()
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)
    server.daemon_threads = True
    with open(path, "a", encoding="utf-8") as log:
        server.log = log
        server.serve_forever()


if __name__ == "__main__":
    main()
