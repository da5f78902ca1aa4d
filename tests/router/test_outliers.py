"""The outlier detector's rules on a hand-driven clock: streaks eject, timeouts eject at once, ejections
double while a pod keeps failing and end on their own; a good answer clears the record."""

from __future__ import annotations

import pytest

from router_lite.outliers import Outcome, OutlierDetector


def test_consecutive_server_errors_eject_and_a_success_in_between_resets_the_streak():
    d = OutlierDetector(consecutive_errors=3, base_ejection_s=2.0)
    assert not d.record("a", Outcome.ERROR, 0.0)
    assert not d.record("a", Outcome.ERROR, 0.1)
    assert not d.record("a", Outcome.OK, 0.2)  # the streak starts over
    assert not d.record("a", Outcome.ERROR, 0.3)
    assert not d.record("a", Outcome.ERROR, 0.4)
    assert d.record("a", Outcome.ERROR, 0.5)
    assert d.ejected("a", 2.4) and not d.ejected("a", 2.5)
    assert "3 failures in a row" in d.reason("a")
    assert not d.ejected("b", 0.5)
    assert d.record("a", Outcome.ERROR, 2.6)  # on probation after the ejection: one more error ejects again
    assert d.until("a") == pytest.approx(6.6) and "again" in d.reason("a")


def test_timeouts_count_like_errors_and_repeated_ejections_double_up_to_the_cap():
    d = OutlierDetector(consecutive_errors=3, base_ejection_s=2.0, max_ejection_s=5.0)
    assert not d.record("a", Outcome.TIMEOUT, 0.0)  # one timeout alone (a client's huge prompt?) ejects nothing
    assert not d.record("a", Outcome.ERROR, 0.1)
    assert d.record("a", Outcome.TIMEOUT, 0.2)
    assert not d.record("a", Outcome.TIMEOUT, 1.0)  # already ejected: nothing new
    assert d.until("a") == pytest.approx(2.2)
    assert d.record("a", Outcome.TIMEOUT, 2.2)  # back on probation, and hung again: twice as long
    assert d.until("a") == pytest.approx(6.2)
    assert d.record("a", Outcome.TIMEOUT, 6.2)
    assert d.until("a") == pytest.approx(11.2)  # capped at 5 s
    assert not d.record("a", Outcome.OK, 11.2)  # recovered: the next failures start from the base again
    assert not d.record("a", Outcome.TIMEOUT, 12.0)


def test_a_late_success_does_not_cancel_an_ejection_and_forget_drops_the_record():
    d = OutlierDetector(consecutive_errors=1, base_ejection_s=2.0)
    d.record("a", Outcome.TIMEOUT, 0.0)
    d.record("a", Outcome.OK, 0.5)  # a request that started before the hang finished now
    assert d.ejected("a", 1.0)
    d.forget("a")
    assert not d.ejected("a", 1.0)


@pytest.mark.parametrize(
    "kw", [{"consecutive_errors": 0}, {"base_ejection_s": 0}, {"base_ejection_s": 5, "max_ejection_s": 1}]
)
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        OutlierDetector(**kw)


def test_a_503_ejects_at_once_and_other_errors_keep_their_streak():
    d = OutlierDetector()
    assert d.record("a", Outcome.UNAVAILABLE, 0.0)  # the pod says it cannot serve: out now
    assert "answered 503" in d.reason("a") and d.ejected("a", 4.9) and not d.ejected("a", 5.1)
    assert not d.record("b", Outcome.ERROR, 0.0) and not d.record("b", Outcome.TIMEOUT, 0.1)
    assert d.record("b", Outcome.UNAVAILABLE, 0.2)  # a 503 ends any streak
    patient = OutlierDetector(consecutive_unavailable=2)
    assert not patient.record("c", Outcome.UNAVAILABLE, 0.0)
    assert not patient.record("c", Outcome.OK, 0.1)  # a good answer in between resets it
    assert not patient.record("c", Outcome.UNAVAILABLE, 0.2) and patient.record("c", Outcome.UNAVAILABLE, 0.3)
