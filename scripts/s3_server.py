#!/usr/bin/env python3
"""A test S3 server: moto's in-memory S3 (PyPI package moto) over HTTP.

Usage: s3_server.py [--host 127.0.0.1] [--port 0]

Listens on HOST:PORT (port 0: a free port chosen by the system) and prints one line,
"listening HOST PORT", on stdout once it accepts connections, so a test can read the port.
Every object lives in memory and is gone when the process ends. Requests are accepted with any
credentials and path-style URLs (http://HOST:PORT/BUCKET/KEY); a bucket is created with an
unsigned `PUT /BUCKET`. Stops on SIGTERM/SIGINT.
"""

import argparse
import os
import signal
import sys

# moto reads its configuration at import time; the server needs no AWS account of the machine.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "madbase-test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "madbase-test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from werkzeug.serving import make_server  # noqa: E402

from moto.moto_server.threaded_moto_server import MotoRequestHandler  # noqa: E402
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app  # noqa: E402


class QuietHandler(MotoRequestHandler):
    """moto's handler without a log line per request (errors are still logged)."""

    def log_request(self, code="-", size="-"):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(args.host, args.port, app, threaded=True, request_handler=QuietHandler)

    def stop(signum, frame):
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    print("listening %s %d" % (host, port), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
