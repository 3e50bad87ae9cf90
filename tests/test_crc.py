"""CRC32C: the hardware path and crcmod (the design card's library) must agree everywhere."""

from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from vigil.auditlog import CRC_BACKEND, crc32c
from vigil.auditlog._crc import crc32c_portable


def test_check_value_of_the_castagnoli_polynomial() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c_portable(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


@given(st.binary(max_size=4096), st.integers(0, 64))
def test_hardware_path_agrees_with_crcmod_oracle(data: bytes, cut: int) -> None:
    view = memoryview(bytearray(data))[min(cut, len(data)) :]
    assert crc32c(view) == crc32c_portable(bytes(view))


def test_backend_is_hardware_here_and_crcmod_can_be_forced() -> None:
    assert CRC_BACKEND == "crc32c (hardware)"
    code = (
        "from vigil.auditlog import CRC_BACKEND, crc32c\n"
        "print(CRC_BACKEND)\nprint(crc32c(b'123456789'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "VIGIL_CRC": "crcmod"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == ["crcmod (forced by VIGIL_CRC)", str(0xE3069283)]
