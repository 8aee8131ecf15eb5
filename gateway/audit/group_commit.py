"""Group commit: several threads' audit writes in one transaction.

Routing workers each audit their order's answer (and its ledger key) before the fill touches the book.
One transaction per answer would make a 100-order timestep 100 fsyncs in a row; here the first writer to
arrive commits everything queued so far in ONE transaction while the others wait, then the next writer
takes what queued meanwhile. Every caller still returns only once its rows are durable, so "audited
before applied" holds; a failed transaction fails every write in it.
"""

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from contracts.audit import AuditEvent
from gateway.audit.store import AuditStore


@dataclass
class _Write:
    events: Sequence[AuditEvent]
    state: Mapping[str, Any] | None
    seqs: list[int] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


class GroupCommit:
    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._written = threading.Condition(self._lock)
        self._queue: list[_Write] = []
        self._committing = False
        self.transactions = 0  # how many transactions carried the writes (for the benchmark)
        self.writes = 0

    def append(self, event: AuditEvent, *, state: Mapping[str, Any] | None = None) -> int:
        return self.append_many([event], state=state)[0]

    def append_many(self, events: Sequence[AuditEvent], *, state: Mapping[str, Any] | None = None) -> list[int]:
        """Like AuditStore.append_many, durable when it returns; state keys written later win."""
        if not events and not state:
            return []
        write = _Write(events, state)
        with self._lock:
            self._queue.append(write)
            while not write.done:
                if self._committing:
                    self._written.wait()
                    continue
                batch, self._queue = self._queue, []
                self._committing = True
                self._lock.release()
                try:
                    self._commit(batch)
                finally:
                    self._lock.acquire()
                    self._committing = False
                    for item in batch:
                        item.done = True
                    self._written.notify_all()
        if write.error is not None:
            raise write.error
        return write.seqs

    def _commit(self, batch: list[_Write]) -> None:
        events = [event for item in batch for event in item.events]
        state: dict[str, Any] = {}
        for item in batch:
            state.update(item.state or {})
        try:
            seqs = self.store.append_many(events, state=state)
        except BaseException as exc:  # every waiting writer gets the failure of the transaction it was in
            for item in batch:
                item.error = exc
            return
        self.transactions += 1
        self.writes += len(batch)
        at = 0
        for item in batch:
            item.seqs = seqs[at:at + len(item.events)]
            at += len(item.events)
