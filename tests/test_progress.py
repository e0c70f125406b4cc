"""The progress line: what matters first, and an ETA from the recent rate."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.progress import RecentRate, eta_seconds, format_eta, progress_line


def test_the_eta_follows_the_recent_rate_not_the_run_average():
    rate = RecentRate(window_s=30)
    # a burst: 100 jobs in the first 2 s (idle targets), then 1 job/s (a per-minute limit)
    rate.add(0.0, 0)
    rate.add(2.0, 100)
    for t in range(3, 63):
        rate.add(float(t), 100 + (t - 2))
    done = 160
    average = done / 62.0  # ~2.6/s: would promise 40 remaining jobs in ~15 s
    recent = rate.rate()
    assert recent is not None and abs(recent - 1.0) < 0.05
    eta = eta_seconds(200 - done, recent)
    assert eta is not None and 38 <= eta <= 42
    assert eta > 2 * (200 - done) / average


def test_no_progress_within_the_window_means_an_unknown_eta_not_a_promise():
    rate = RecentRate(window_s=30)
    rate.add(0.0, 10)
    rate.add(40.0, 10)
    rate.add(45.0, 10)
    assert rate.rate() == 0.0
    assert eta_seconds(5, rate.rate()) is None
    assert format_eta(None) == "eta ?"
    assert eta_seconds(0, None) == 0.0


def test_too_little_time_measured_gives_no_rate():
    rate = RecentRate()
    rate.add(0.0, 0)
    rate.add(0.5, 50)
    assert rate.rate() is None


def test_at_80_columns_the_count_and_eta_survive():
    providers = " ".join(f"provider{i}={i * 111}" for i in range(10))
    line = progress_line(1234, 20000, 7, 12.5, 1500.0, providers, width=79)
    assert len(line) <= 79
    assert line.startswith("1234/20000 done  eta 25m00s  12.5/s  7 failed")


@settings(derandomize=True, database=None)  # the same examples on every run (CI)
@given(done=st.integers(0, 10**7), extra=st.integers(0, 10**7), failed=st.integers(0, 10**6),
       rate=st.one_of(st.none(), st.floats(0, 1e5)),
       eta=st.one_of(st.none(), st.floats(0, 1e7)), width=st.integers(50, 300),
       providers=st.text(alphabet="abcxyz=0123 ", max_size=400))
def test_the_line_fits_and_always_starts_with_count_and_eta(done, extra, failed, rate, eta,
                                                            width, providers):
    total = done + extra
    line = progress_line(done, total, failed, rate, eta, providers, width=width)
    assert len(line) <= width
    assert line.startswith(f"{done}/{total} done  {format_eta(eta)}")
