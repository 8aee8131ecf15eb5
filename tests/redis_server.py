"""Redis for the tests: the machine's (MARLOPS_TEST_REDIS_URL) and a private redis-server on a free port.

The fixtures over these (`machine_redis`, `private_redis`) are in tests/conftest.py."""

import os
import subprocess
from pathlib import Path

import redis
from polling import wait_for

from gateway.serve import free_port

REDIS_URL = os.environ.get("MARLOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DIRECTIVE_CHANNEL = "master-directives"


def redis_unreachable_reason(url: str = REDIS_URL) -> str | None:
    """None when Redis answers at `url`, else why not (tests skip with it)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        return f"Redis not reachable at {url} ({exc}); set MARLOPS_TEST_REDIS_URL to run the Redis tests"
    finally:
        client.close()


def pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class PrivateRedis:
    """A throwaway redis-server on a free port (no persistence), started, killed and restarted by the test."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = free_port() if port is None else port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start on the same port every time; return once it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            wait_for(lambda: pings(client), "private redis-server to answer")
        finally:
            client.close()

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    def publish(self, payload: str, channel: str = DIRECTIVE_CHANNEL) -> int:
        """Publish raw on `channel`; the number of subscribers that got it."""
        client = redis.Redis(port=self.port)
        try:
            return int(client.publish(channel, payload))
        finally:
            client.close()
