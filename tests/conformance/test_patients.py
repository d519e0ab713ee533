"""Patient pool and the Patient Identity Feed clients over real loopback sockets."""

from __future__ import annotations

import pytest

from conformance.patients import CommandFeed, FeedError, Hl7Feed, PatientPool, check_ack, parse_host_port
from tests.conformance.servers import free_port, mllp_server

DEFINITIONS = {"P_REG": {"fed": True}, "P_NEW": {"fed": False}}


def test_hl7_feed_sends_adt_a04_with_the_cx_in_pid3() -> None:
    with mllp_server("AA") as (port, received):
        Hl7Feed("127.0.0.1", port, timeout=5).feed("P1.1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO")
    segments = received[0].split("\r")
    assert segments[0].split("|")[8] == "ADT^A04^ADT_A01"
    pid = next(s for s in segments if s.startswith("PID"))
    assert pid.split("|")[3] == "P1.1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"


def test_hl7_feed_rejection_carries_the_reason() -> None:
    with mllp_server("AE") as (port, _received), pytest.raises(FeedError, match="MSA-1=AE"):
        Hl7Feed("127.0.0.1", port, timeout=5).feed("P1^^^&1.2&ISO")


def test_hl7_feed_to_a_closed_port_is_a_feed_error() -> None:
    with pytest.raises(FeedError, match="HL7 feed"):
        Hl7Feed("127.0.0.1", free_port(), timeout=2).feed("P1^^^&1.2&ISO")


def test_ack_parsing() -> None:
    check_ack(b"MSH|^~\\&|A|B|C|D|1||ACK|9|P|2.5\rMSA|AA|C1\r", "C1")
    with pytest.raises(FeedError, match="no MSA"):
        check_ack(b"MSH|^~\\&|A\r")
    with pytest.raises(FeedError, match="answers message"):
        check_ack(b"MSA|AA|OTHER\r", "C1")


def test_command_feed_passes_the_quoted_id_and_checks_the_exit_status(tmp_path) -> None:
    out = tmp_path / "fed.txt"
    CommandFeed(f"printf %s {{pid}} > {out}").feed("P1^^^&1.2&ISO")
    assert out.read_text() == "P1^^^&1.2&ISO"
    with pytest.raises(FeedError, match="exited 3"):
        CommandFeed("echo nope >&2; exit 3 # {pid}").feed("P1")


def test_pool_allocates_fresh_ids_and_feeds_each_once() -> None:
    with mllp_server("AA") as (port, received):
        pool = PatientPool(DEFINITIONS, Hl7Feed("127.0.0.1", port, timeout=5), authority="1.2.3")
        reg = pool.resolve("P_REG")
        assert reg.endswith("^^^&1.2.3&ISO") and reg == pool.resolve("P_REG")
        assert pool.resolve("P_NEW") != reg
        assert pool.ensure_fed("P_REG") is None and pool.ensure_fed(reg) is None
        assert pool.ensure_fed("P_NEW") is None  # fed: false -> never sent
        assert pool.ensure_fed("LIT^^^&1.2.3&ISO") is None  # literal ids are fed
    fed = [next(s for s in m.split("\r") if s.startswith("PID")).split("|")[3] for m in received]
    assert fed == [reg, "LIT^^^&1.2.3&ISO"]
    other = PatientPool(DEFINITIONS, None, authority="1.2.3")
    assert other.resolve("P_REG") != reg  # a fresh set per run


def test_pool_remembers_a_failed_feed() -> None:
    with mllp_server("AR") as (port, received):
        pool = PatientPool(DEFINITIONS, Hl7Feed("127.0.0.1", port, timeout=5))
        first = pool.ensure_fed("P_REG")
        assert first is not None and "MSA-1=AR" in first
        assert pool.ensure_fed("P_REG") == first
    assert len(received) == 1


def test_host_port_parsing() -> None:
    assert parse_host_port("127.0.0.1:2575") == ("127.0.0.1", 2575)
    assert parse_host_port("[::1]:2575") == ("::1", 2575)
    with pytest.raises(ValueError):
        parse_host_port("localhost")
