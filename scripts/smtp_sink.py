#!/usr/bin/env python3
"""A test SMTP server: accepts every message and writes it into a directory.

Usage: smtp_sink.py --dir DIR [--host 127.0.0.1] [--port 0] [--max-size BYTES]

Listens on HOST:PORT (port 0: a free port chosen by the system) and prints one line,
"listening HOST PORT", on stdout once it accepts connections, so a test can read the port.
Every accepted message becomes two files in DIR, written atomically (a temporary name, then
a rename), named by arrival order: NNNNNN.eml (the raw message) and NNNNNN.json with the
keys mail_from, rcpt_tos (the SMTP envelope), from, to, subject (decoded headers),
content_type, body (the decoded HTML or text part) and received_at (Unix seconds).
No TLS and no AUTH: plain SMTP for tests on the loopback interface. Stops on SIGTERM/SIGINT.
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import signal
import sys
import time

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    def _write(self, name, data):
        tmp = os.path.join(self.directory, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(self.directory, name))

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        stem = "%06d" % self.count
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        part = msg.get_body(preferencelist=("html", "plain"))
        body = part.get_content() if part is not None else ""
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "from": str(msg.get("From", "")),
            "to": str(msg.get("To", "")),
            "subject": str(msg.get("Subject", "")),
            "content_type": part.get_content_type() if part is not None else "",
            "body": body,
            "received_at": time.time(),
        }
        # The raw message first: a test that sees the JSON finds the .eml beside it.
        self._write(stem + ".eml", raw)
        self._write(stem + ".json", json.dumps(record, indent=2).encode("utf-8"))
        return "250 Message accepted for delivery"


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--max-size", type=int, default=10 * 1024 * 1024)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    handler = Sink(args.dir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=args.max_size, enable_SMTPUTF8=True, hostname="smtp-sink"),
        host=args.host,
        port=args.port,
    )
    port = server.sockets[0].getsockname()[1]
    print("listening %s %d" % (args.host, port), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
