"""`marlops market-data`: run the local Alpaca-compatible market-data server.

    marlops market-data --source synthetic:planted-alpha --port 5200 --bars-per-second 2 --warmup-bars 64

Clients authenticate with APCA_API_KEY_ID / APCA_API_SECRET_KEY read from the environment; unset,
the server uses the local pair `market_data.alpaca_server.LOCAL_KEY_ID` / `LOCAL_SECRET_KEY`
("local-key" / "local-secret"). Keys are never printed: only the URLs to point clients at
(APCA_DATA_URL=http://HOST:PORT, APCA_DATA_STREAM_URL=ws://HOST:PORT/v2/iex).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_market_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `market-data` on the `marlops` sub-parsers; `func` runs it."""
    from market_data.alpaca_server import add_server_arguments

    parser = subparsers.add_parser(
        "market-data", help="serve bars (synthetic or files) as a local Alpaca-compatible market-data API")
    add_server_arguments(parser)
    parser.set_defaults(func=run_market_data)
    return parser


def run_market_data(args: argparse.Namespace) -> int:
    from market_data.alpaca_server import serve
    from market_data.errors import MarketDataError

    # Logging is set up by `marlops` (marlops.cli: contracts.logs, service marlops-market-data) before this runs.
    try:
        return serve(args)
    except MarketDataError as exc:
        print(f"marlops market-data: {exc}")
        return 2
