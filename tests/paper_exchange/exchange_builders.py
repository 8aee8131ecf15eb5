"""Constants shared by the paper exchange tests (plain values, no fixtures)."""

from datetime import datetime, timezone

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=timezone.utc)
# The exchange's default key pair (create_paper_exchange_app, python -m paper_exchange).
KEY_ID = "marlops-paper"
SECRET_KEY = "marlops-paper-secret"
PAPER_HEADERS = {"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET_KEY}
