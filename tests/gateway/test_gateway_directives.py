import threading
from datetime import timedelta

from gateway_builders import T0, directive

from contracts.decisions import MasterDirective
from gateway.directives import DirectiveBook, InProcessDirectiveSource


def test_current_when_no_directive_then_none() -> None:
    assert DirectiveBook(86400).current(T0) is None


def test_current_when_latest_expired_in_market_time_then_none() -> None:
    book = DirectiveBook(864000)
    book.add(directive(ttl_seconds=600))
    assert book.current(T0 + timedelta(seconds=599)) is not None
    assert book.current(T0 + timedelta(seconds=601)) is None


def test_current_when_newer_directive_issued_after_decision_then_older_one_applies() -> None:
    book = DirectiveBook(864000)
    book.add(directive("normal", directive_id="old"))
    book.add(directive("defensive", issued_at=T0 + timedelta(hours=2), directive_id="new"))
    current = book.current(T0 + timedelta(hours=1))
    assert current is not None and current.directive_id == "old"
    latest = book.current(T0 + timedelta(hours=3))
    assert latest is not None and latest.directive_id == "new"


def test_current_when_book_ttl_cap_shorter_then_cap_applies() -> None:
    book = DirectiveBook(60)
    book.add(directive(ttl_seconds=3600))
    assert book.current(T0 + timedelta(seconds=61)) is None


def test_current_when_decision_time_naive_then_treated_as_utc() -> None:
    book = DirectiveBook(864000)
    book.add(directive())
    assert book.current((T0 + timedelta(seconds=5)).replace(tzinfo=None)) is not None


def test_publish_when_added_from_many_threads_then_every_directive_reaches_subscriber() -> None:
    bus = InProcessDirectiveSource()
    book = DirectiveBook(864000)
    got: list[MasterDirective] = []
    lock = threading.Lock()

    def record(d: MasterDirective) -> None:
        with lock:
            got.append(d)
        book.add(d)

    bus.subscribe(record)
    threads = [threading.Thread(target=bus.publish, args=(directive(directive_id=f"d{i}",
                                                                     issued_at=T0 + timedelta(seconds=i)),))
               for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 20
    latest = book.latest()
    assert latest is not None and latest.directive_id == "d19"


def test_add_when_the_same_directive_arrives_twice_then_held_once() -> None:
    book = DirectiveBook(max_ttl_seconds=86400)
    first = directive(directive_id="master-x-bar5")
    assert not book.holds(first)
    book.add(first)
    assert book.holds(first)
    book.add(first)
    assert book.latest() == first
    assert not book.holds(directive("defensive", directive_id="master-x-bar5"))
