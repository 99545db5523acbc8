"""The direct-scrape source: rates, increases, changes and a target that stops answering."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from loadgate.metrics.scrape import UP, ScrapeSource, parse_exposition
from loadgate.plan.model import ScrapeSpec


class Target:
    """A real prometheus_client registry whose exposition the source reads, on a fake clock."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("app_requests", "requests", ["status"], registry=self.registry)
        self.memory = Gauge("app_memory_ratio", "memory", registry=self.registry)
        self.start = Gauge("process_start_time_seconds", "start", registry=self.registry)
        self.limit = Gauge("app_cpu_limit_cores", "limit", registry=self.registry)
        self.cpu = Counter("app_cpu_seconds", "cpu", registry=self.registry)
        self.down = False
        self.now = 1000.0
        self.late_s = 0.0  # how long an answer takes, the target busy for it (half a core)
        self.fetches = 0

    def fetch(self) -> str:
        self.fetches += 1
        if self.down:
            raise OSError("connection refused")
        self.now += self.late_s
        self.cpu.inc(0.5 * self.late_s)
        return generate_latest(self.registry).decode()

    def source(self) -> ScrapeSource:
        specs = {
            "errors_per_s": {
                "metric": "app_requests_total",
                "fn": "rate",
                "labels": {"status": "500"},
            },
            "requests": ScrapeSpec(metric="app_requests_total", fn="increase"),
            "memory": {"metric": "app_memory_ratio"},
            "restarts": {"metric": "process_start_time_seconds", "fn": "changes"},
            "cpu": {
                "metric": "app_cpu_seconds_total",
                "fn": "rate",
                "divide_by": "app_cpu_limit_cores",
            },
        }
        return ScrapeSource(
            "http://127.0.0.1:1/metrics", specs, fetch=self.fetch, clock=lambda: self.now
        )


def test_gauge_rate_increase_and_divide_by() -> None:
    t = Target()
    t.memory.set(0.5)
    t.limit.set(2)
    source = t.source()
    first = source.sample(["memory", "errors_per_s", "requests", "cpu", UP], 10)
    assert first == {"memory": 0.5, "errors_per_s": None, "requests": None, "cpu": None, UP: 1.0}
    t.now += 5
    t.requests.labels("500").inc(10)
    t.requests.labels("200").inc(30)
    t.cpu.inc(5)  # 5 CPU-seconds in 5 s on a 2-core limit: 50 %
    second = source.sample(["errors_per_s", "requests", "cpu"], 10)
    assert second["errors_per_s"] == pytest.approx(2.0)
    assert second["requests"] == pytest.approx(40.0)
    assert second["cpu"] == pytest.approx(0.5)


def test_window_forgets_older_samples() -> None:
    t = Target()
    source = t.source()
    source.sample(["requests"], 3)
    t.requests.labels("200").inc(100)
    t.now += 5
    source.sample(["requests"], 3)
    t.now += 2
    # only the last two scrapes lie inside a 3 s window: nothing happened between them
    assert source.sample(["requests"], 3)["requests"] == 0.0


def test_counter_reset_counts_as_restart_not_negative_rate() -> None:
    t = Target()
    t.start.set(100)
    source = t.source()
    t.requests.labels("200").inc(50)
    source.sample(["requests", "restarts"], 60)
    # the process restarts: counters start again from zero, the start time moves
    fresh = Target()
    fresh.now = t.now + 5
    fresh.start.set(200)
    fresh.requests.labels("200").inc(7)
    source._fetch = fresh.fetch
    source._clock = lambda: fresh.now
    after = source.sample(["requests", "restarts"], 60)
    assert after["requests"] == 7.0
    assert after["restarts"] == 1.0


def test_target_down_reads_none_and_up_zero() -> None:
    t = Target()
    t.memory.set(0.3)
    source = t.source()
    assert source.sample(["memory", UP], 5) == {"memory": 0.3, UP: 1.0}
    t.down = True
    t.now += 1
    assert source.sample(["memory", UP, "unknown"], 5) == {"memory": None, UP: 0.0, "unknown": None}


def test_bad_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="fn"):
        ScrapeSource("http://127.0.0.1:1/metrics", {"x": {"metric": "x", "fn": "avg"}})


def test_parse_exposition_keys_by_labels() -> None:
    text = 'a_total{b="1",a="2"} 3\n# TYPE c gauge\nc 4.5\n'
    parsed = parse_exposition(text)
    assert parsed[("a_total", (("a", "2"), ("b", "1")))] == 3.0
    assert parsed[("c", ())] == 4.5


def test_a_late_answer_is_stamped_when_it_arrived() -> None:
    """The target uses half a core throughout; the second scrape is answered a second late,
    its counter read then. Stamped at the request, the window would read 1 s of CPU over 1 s
    (a whole core: twice the truth); stamped at the answer, 1 s over 2 s."""
    t = Target()
    t.limit.set(1)
    source = t.source()
    source.sample(["cpu"], 10)
    t.now += 1.0
    t.cpu.inc(0.5)
    t.late_s = 1.0
    assert source.sample(["cpu"], 10)["cpu"] == pytest.approx(0.5)


def test_samples_a_moment_apart_read_one_scrape() -> None:
    """The stage's sampler asks for each criterion window back to back. Scraped each time, the
    CPU counter's 10 ms tick between two scrapes 20 ms apart read as half a core (50% of this
    limit) on a target that had been idle; one scrape is read by both, and a rate waits for a
    second scrape (at the next sample, a second later)."""
    t = Target()
    t.limit.set(1)
    t.cpu.inc(3.0)  # the target's CPU before the stage
    source = t.source()
    assert source.sample(["memory"], 30) == {"memory": 0.0}
    t.now += 0.02
    t.cpu.inc(0.01)  # one tick
    assert source.sample(["cpu"], 15) == {"cpu": None}
    assert t.fetches == 1
    t.now += 1.0
    t.cpu.inc(0.01)
    assert source.sample(["cpu"], 15)["cpu"] == pytest.approx(0.02 / 1.02)
    assert t.fetches == 2
