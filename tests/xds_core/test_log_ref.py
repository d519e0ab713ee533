"""Identifiers in log lines: a stable pseudonymous reference, never the value (issue 13)."""

from __future__ import annotations

import hashlib
import sys

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


def test_redact_hides_uids_patient_ids_and_query_strings_but_keeps_addresses() -> None:
    from xds_core.log_ref import redact

    text = ("GET https://127.0.0.1:8042/dicom-web/studies/1.3.6.1.4.1.21367.201599.1.201604020954059/series"
            "?PatientID=IDS-AD002-a&limit=5: timed out; patient 'IDS-AD002-a^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO'")
    out = redact(text)
    assert "1.3.6.1.4.1.21367.201599.1.201604020954059" not in out
    assert "IDS-AD002-a" not in out and "PatientID" not in out
    assert "127.0.0.1:8042" in out and "timed out" in out
    assert log_ref("1.3.6.1.4.1.21367.201599.1.201604020954059") in out
    assert redact(ValueError("plain text, version 3.0.19")) == f"plain text, version {log_ref('3.0.19')}"


def test_a_logged_traceback_carries_no_uid_of_the_exception_message() -> None:
    import logging

    from xds_core.log_ref import RedactingFormatter

    formatter = RedactingFormatter("%(message)s")
    try:
        raise OSError("GET /studies/1.2.840.113619.2.55.3.604688119?PatientID=P-42 failed")
    except OSError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "fetch failed", None, sys.exc_info())
    text = formatter.format(record)
    assert "fetch failed" in text and "Traceback" in text
    assert "1.2.840.113619.2.55.3.604688119" not in text and "P-42" not in text
