"""Identifiers in log lines: a stable pseudonymous reference, never the value (issue 13)."""

from __future__ import annotations

import hashlib

from xds_core.log_ref import REF_DIGITS, log_ref


def test_a_reference_is_stable_short_and_does_not_contain_the_value() -> None:
    uid = "1.3.6.1.4.1.21367.201599.1.201604020954059"
    ref = log_ref(uid)
    assert ref == log_ref(uid) == "ref:" + hashlib.sha256(uid.encode()).hexdigest()[:REF_DIGITS]
    assert uid not in ref and "21367" not in ref
    assert log_ref("1.3.6.1.4.1.21367.201599.1.201604020954058") != ref


def test_nothing_is_a_dash_and_a_forged_value_cannot_break_the_line() -> None:
    assert log_ref("") == log_ref(None) == "-"
    assert "\n" not in log_ref("x\nforged=line") and log_ref("x\nforged=line").startswith("ref:")
