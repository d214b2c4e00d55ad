"""A nightly job calling ``workflows`` with nobody logged in: the hop that has no identity.

Run as ``opentelemetry-instrument python cron.py WORKFLOWS_TARGET``.
"""

from __future__ import annotations

import sys

import grpc

with grpc.insecure_channel(sys.argv[1]) as channel:
    reply = channel.unary_unary("/zc.Workflows/Build")(b"", timeout=10)
sys.stderr.write(reply.decode() + "\n")
