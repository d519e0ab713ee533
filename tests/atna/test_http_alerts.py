"""atna.tls.AlertLimiter: refusals become Security Alerts without letting a scan flood the audit trail."""

from __future__ import annotations

from atna.tls import AlertLimiter


def test_one_alert_per_peer_address_per_interval() -> None:
    limiter = AlertLimiter(interval=10, burst=20)
    assert limiter.allow("192.0.2.1", now=100.0)
    assert not limiter.allow("192.0.2.1", now=105.0)
    assert limiter.allow("192.0.2.2", now=105.0)
    assert limiter.allow("192.0.2.1", now=110.5)
    assert limiter.take_suppressed() == 1 and limiter.take_suppressed() == 0


def test_many_addresses_are_capped_per_interval_and_counted() -> None:
    limiter = AlertLimiter(interval=10, burst=3)
    allowed = [limiter.allow(f"192.0.2.{n}", now=50.0 + n / 100) for n in range(10)]
    assert allowed == [True] * 3 + [False] * 7
    assert limiter.take_suppressed() == 7
    assert limiter.allow("192.0.2.9", now=61.0)  # a new interval
