"""HTTP surface of the gateway. The only place that knows about status codes."""
