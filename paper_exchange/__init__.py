"""The simulated venue: a local Alpaca-compatible paper exchange, apart from the live broker adapters.

- `book.py`: the exchange's state (one account, last prices, orders, positions); thread-safe.
- `app.py`: the HTTP face (`create_paper_exchange_app`, the subset of Alpaca's trading REST API that
  alpaca-py needs, plus the `/_sim` controls) and the CLI, `python -m paper_exchange`.
- `faults.py`: seeded fault injection (latency, timeouts, 5xx, 429, rejects, partial fills).
- `wire.py`: Alpaca's JSON shapes for the book's account, orders, positions and clock.
- `inprocess.py`: `InProcessBroker`, the gateway's Broker protocol over a PaperBook in the same
  process (no HTTP server), with the values the HTTP path gives.

Imports only `contracts` and `gateway.brokers` (the broker interface and the rate limiter); nothing in
`gateway/` imports this package.
"""
