"""The `marlops master` parser, apart from the service (marlops/master_process.py), so that building the `marlops`
parser does not import torch, Triton clients and the feature code for every other command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from serving.snapshot_bus import SNAPSHOT_CHANNEL

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"


def _cmd_master(args: argparse.Namespace) -> int:
    from marlops.master_process import cmd_master

    return cmd_master(args)


def add_master_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`marlops master ...` (the caller's parser provides the global `--config-dir` and `--verbose`)."""
    master = subparsers.add_parser(
        "master", help="run the master agent service: market snapshots from Redis -> directives on Redis")
    master.add_argument("--redis-url", default=None,
                        help="the bus (default: MARLOPS_DIRECTIVE_BUS_URL / REDIS_URL, else directive_bus.redis_url "
                             "of serving.yaml)")
    master.add_argument("--snapshot-channel", default=SNAPSHOT_CHANNEL)
    master.add_argument("--directive-channel", default=None, help="default: directive_bus.channel of serving.yaml")
    master.add_argument("--version", type=int, default=None,
                        help="pin this master_agent version (default: follow the routing table's master slot, "
                             "switching versions when it changes; the highest exported one while no slot is set)")
    master.add_argument("--model-repository", type=Path, default=None,
                        help="Triton model repository (default: triton.model_repository of serving.yaml)")
    master.add_argument("--triton-url", default=None,
                        help="Triton endpoint (default: 127.0.0.1 and the serving.yaml port of --protocol)")
    master.add_argument("--protocol", choices=["grpc", "http"], default=None,
                        help="default: triton.protocol of serving.yaml")
    master.add_argument("--gateway-url", default=DEFAULT_GATEWAY_URL)
    master.add_argument("--gateway-token-file", type=Path, default=None,
                        help="raw bearer token for GET /v1/portfolio (default: <MARLOPS_HOME>/tokens/viewer.token, "
                             "else trader.token, if present)")
    master.add_argument("--every-bars", type=int, default=None, help="default: loop.master_every_bars")
    master.add_argument("--every-seconds", type=float, default=None,
                        help="act when this much market time has passed since the last directive (e.g. 300), "
                             "instead of every K bars")
    master.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (default: off; `make up` uses 9102)")
    master.set_defaults(func=_cmd_master)
    return master
