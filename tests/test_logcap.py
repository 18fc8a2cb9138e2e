"""The log cap on its own: head, marker, tail, and the 4 KiB tail hooks see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cronflow.logcap import TAIL_BYTES, OutputLog

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def feed(cap: int | None, lines: list[bytes]) -> tuple[list[tuple[str, bytes]], OutputLog]:
    out: list[tuple[str, bytes]] = []
    log = OutputLog(lambda stream, at, data: out.append((stream, data)), cap)
    for i, line in enumerate(lines):
        log.add("err" if i % 2 else "out", T0 + timedelta(seconds=i), line)
    log.finish(T0 + timedelta(seconds=len(lines)))
    return out, log


def test_without_a_cap_everything_passes() -> None:
    lines = [b"%d\n" % i for i in range(1000)]
    out, _ = feed(None, lines)
    assert [d for _, d in out] == lines


def test_output_that_fits_has_no_marker() -> None:
    out, _ = feed(100, [b"a" * 9 + b"\n"] * 10)
    assert all(stream != "marker" for stream, _ in out) and len(out) == 10


def test_head_marker_and_tail_stay_within_the_cap() -> None:
    lines = [b"line %04d\n" % i for i in range(1000)]  # 10 bytes each, 10,000 in all
    out, _ = feed(1000, lines)
    data = [d for s, d in out if s != "marker"]
    markers = [d for s, d in out if s == "marker"]
    assert data[0] == b"line 0000\n" and data[-1] == b"line 0999\n"
    assert sum(map(len, data)) <= 1000
    assert markers == [b"[cronflow: %d bytes of output dropped]\n" % (10_000 - sum(map(len, data)))]
    marker_at = [i for i, (s, _) in enumerate(out) if s == "marker"][0]
    assert data[:marker_at] == lines[:marker_at]  # the head, in order
    assert out[marker_at + 1 :] == [
        (("err" if i % 2 else "out"), lines[i])
        for i in range(1000 - len(out) + marker_at + 1, 1000)
    ]


def test_one_huge_line_is_cut_not_lost() -> None:
    out, _ = feed(100, [b"x" * 1000])
    kept = b"".join(d for s, d in out if s != "marker")
    assert len(kept) == 100 and kept == b"x" * 100
    assert out[1] == ("marker", b"[cronflow: 900 bytes of output dropped]\n")


def test_last_bytes_is_the_tail_of_everything() -> None:
    lines = [b"%05d\n" % i for i in range(5000)]
    _, log = feed(50, lines)
    assert log.last_bytes() == b"".join(lines)[-TAIL_BYTES:]


def test_log_cap_tail_keeps_streams_and_times() -> None:
    got: list[tuple[str, datetime, bytes]] = []
    log = OutputLog(lambda s, t, d: got.append((s, t, d)), 10)
    times = [datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC) for i in range(6)]
    for i, at in enumerate(times):
        log.add("out" if i % 2 else "err", at, b"%d\n" % i)
    log.finish(times[-1])
    assert got == [
        ("err", times[0], b"0\n"),
        ("out", times[1], b"1\n"),
        ("marker", times[4], b"[cronflow: 4 bytes of output dropped]\n"),
        ("err", times[4], b"4\n"),
        ("out", times[5], b"5\n"),
    ]


def test_log_cap_not_reached_delivers_everything_without_marker() -> None:
    got: list[bytes] = []
    log = OutputLog(lambda s, t, d: got.append(d), 10)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(4):
        log.add("out", at, b"%d\n" % i)
    log.finish(at)
    assert got == [b"0\n", b"1\n", b"2\n", b"3\n"]


def test_log_cap_cuts_a_single_huge_line() -> None:
    got: list[tuple[str, bytes]] = []
    log = OutputLog(lambda s, t, d: got.append((s, d)), 10)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    log.add("out", at, b"abcdefghijklmnopqrstuvwxyz")
    log.finish(at)
    assert got == [
        ("out", b"abcde"),
        ("marker", b"[cronflow: 16 bytes of output dropped]\n"),
        ("out", b"vwxyz"),
    ]
