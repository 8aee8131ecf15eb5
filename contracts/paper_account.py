"""The local paper account's key pair: what the local paper exchange and market-data server accept by default and what
the gateway, `make up` and the chaos run present to them. Not a secret: neither server reaches a real account; real
Alpaca keys come only from APCA_API_KEY_ID / APCA_API_SECRET_KEY."""

LOCAL_PAPER_KEY_ID = "marlops-paper"
LOCAL_PAPER_SECRET = "marlops-paper-secret"
