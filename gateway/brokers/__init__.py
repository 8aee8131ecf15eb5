"""Brokers the gateway routes orders to: the Alpaca adapter (alpaca-py) and the local paper exchange."""
