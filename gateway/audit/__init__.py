"""Append-only, hash-chained audit trail of everything the gateway decides and does."""
