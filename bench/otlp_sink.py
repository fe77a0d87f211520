"""A local OTLP/HTTP endpoint that accepts span exports and throws them away (for benchmarks).

    .venv/bin/python bench/otlp_sink.py [--port 4318]

Point ``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<port>`` at it to measure what tracing costs
the processes that record and export spans, without a collector. On SIGTERM or Ctrl-C it prints
how many export requests and bytes it received.
"""

import argparse
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        self.server.received += 1
        self.server.bytes += length
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.received = server.bytes = 0

    def stop(*_):
        print(f"otlp_sink requests={server.received} bytes={server.bytes}", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
