"""KEY=VALUE site files (xds_core/env_file.py), read by config.env for XDS_ENV_FILE and by the benchmarks."""

from __future__ import annotations

import pytest

from xds_core.env_file import EnvFileError, parse_env_text


def test_env_text_is_read_like_xds_env_file() -> None:
    text = "# Hospital A: written by make run\n\nDICOMWEB_URL=http://127.0.0.1:8042/dicom-web\n  PORT = 8001 \n" \
           "XDS_IMAGING_AUTHOR_INSTITUTION=Hospital A^^^^^^^^^1.3.6.1.4.1.21367.13.80.111\nEMPTY=\n"
    assert parse_env_text(text) == {
        "DICOMWEB_URL": "http://127.0.0.1:8042/dicom-web", "PORT": "8001",
        "XDS_IMAGING_AUTHOR_INSTITUTION": "Hospital A^^^^^^^^^1.3.6.1.4.1.21367.13.80.111", "EMPTY": ""}


@pytest.mark.parametrize("line", ["no equals sign", "=value", "1KEY=x", "BAD-KEY=x"])
def test_env_text_refuses_a_line_that_is_not_key_value(line: str) -> None:
    with pytest.raises(EnvFileError, match="line 2"):
        parse_env_text(f"OK=1\n{line}\n")


