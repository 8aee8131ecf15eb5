"""Brokers the gateway routes orders to: the Alpaca adapter (alpaca-py), for Alpaca or the local paper
exchange (the top-level `paper_exchange` package, which this package never imports)."""
