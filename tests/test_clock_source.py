"""The recorder's clock source (issue 18, SOP §4.1): realtime, TAI or a PTP hardware clock,
recorded when a session opens; ``verify --clock-steps`` names the clock that stepped.

These machines have no ``/dev/ptp*``: the PTP path is driven through its injection points
(an opener and a ``gettime``), with ``/dev/null`` standing in as the character device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_service_config import with_

import vigil
from vigil.auditlog import (
    FlightRecorder,
    LogReader,
    PosixClock,
    SystemClock,
    clock_from_config,
    clock_steps,
)
from vigil.errors import ClockUnavailable, ServiceConfigError
from vigil.schemas import ClockSource, LifecycleEvent, RecordType
from vigil.service._config import ServeConfig

from conftest import SMALL, FakeClock, infer

TAI_OFFSET = 37_000_000_000  # TAI - UTC since 2017


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _opened(path: str) -> dict:
    with LogReader(path) as r:
        rec = next(r.records(types=[RecordType.LIFECYCLE]))
    assert rec.body["event"] is LifecycleEvent.OPENED
    return rec.body


# --- the sources ------------------------------------------------------------------------


def test_a_ptp_clock_is_read_through_its_dynamic_clock_id(tmp_path: Path) -> None:
    seen: list[int] = []
    fds: list[int] = []

    def opener(path: str, flags: int) -> int:
        fds.append(os.open("/dev/null", flags))  # a character device, like /dev/ptp0
        return fds[-1]

    def gettime(clock_id: int) -> int:
        seen.append(clock_id)
        return time.time_ns() + TAI_OFFSET  # a PHC disciplined to TAI

    before = _fd_count()
    clock = PosixClock.ptp("/dev/ptp3", opener=opener, gettime=gettime)
    assert seen[0] == ((~fds[0]) << 3) | 3  # FD_TO_CLOCKID(fd): the kernel's dynamic id
    path = str(tmp_path / "ptp.vigil")
    with FlightRecorder.create(path, SMALL, clock=clock) as w:
        infer(w, 1)
    clock.close()
    assert _fd_count() == before  # the device is closed with the clock
    body = _opened(path)
    assert body["clock"] is ClockSource.PTP
    described = json.loads(body["detail"])["clock"]
    assert described["source"] == "ptp" and described["device"] == "/dev/ptp3"
    # the measured offset to CLOCK_REALTIME is the PHC's, within its stated uncertainty
    slack = described["offset_uncertainty_ns"] + 5_000_000
    assert abs(described["offset_to_realtime_ns"] - TAI_OFFSET) <= slack
    with LogReader(path) as r:
        inference = next(r.records(types=[RecordType.INFERENCE]))
    assert abs(inference.real_ns - (time.time_ns() + TAI_OFFSET)) < 60_000_000_000


def test_a_missing_ptp_device_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClockUnavailable, match="ptp9: cannot open") as exc:
        PosixClock.ptp(str(tmp_path / "ptp9"))
    assert exc.value.code == "DIA-3060"


def test_a_regular_file_is_not_a_ptp_clock_and_leaks_no_fd(tmp_path: Path) -> None:
    plain = tmp_path / "ptp0"
    plain.write_bytes(b"")
    before = _fd_count()
    with pytest.raises(ClockUnavailable, match="not a character device") as exc:
        PosixClock.ptp(str(plain))
    assert exc.value.code == "DIA-3060" and _fd_count() == before


def test_a_device_that_is_no_clock_is_refused_and_closed() -> None:
    def gettime(clock_id: int) -> int:
        raise OSError(22, "Invalid argument")  # what clock_gettime says of /dev/null

    before = _fd_count()
    with pytest.raises(ClockUnavailable, match="cannot be read") as exc:
        PosixClock.ptp("/dev/null", gettime=gettime)
    assert exc.value.code == "DIA-3060" and _fd_count() == before


def test_clock_tai_is_read_and_its_offset_recorded(tmp_path: Path) -> None:
    clock = PosixClock.tai()  # Linux has CLOCK_TAI; its offset is 0 until ptp4l/chrony set it
    path = str(tmp_path / "tai.vigil")
    with FlightRecorder.create(path, SMALL, clock=clock) as w:
        infer(w, 1)
    body = _opened(path)
    described = json.loads(body["detail"])["clock"]
    assert body["clock"] is ClockSource.TAI and described["source"] == "tai"
    assert described["offset_to_realtime_ns"] // 1_000_000_000 in (0, 36, 37)


def test_the_system_clock_says_realtime(tmp_path: Path) -> None:
    path = str(tmp_path / "rt.vigil")
    with FlightRecorder.create(path, SMALL, clock=SystemClock()):
        pass
    assert json.loads(_opened(path)["detail"])["clock"] == {"source": "realtime"}


def test_a_configured_source_that_does_not_exist_is_refused() -> None:
    with pytest.raises(ClockUnavailable, match="choose realtime, tai or ptp"):
        clock_from_config("gps")
    assert isinstance(clock_from_config("realtime"), SystemClock)


# --- steps --------------------------------------------------------------------------------


def _stepped_log(path: str, step_ns: int, slew_ns: int = 0) -> None:
    clock = FakeClock(step_ns=1_000_000)
    with FlightRecorder.create(path, SMALL, clock=clock) as w:
        for i in range(1, 6):
            infer(w, i)
        clock.real += step_ns  # someone set the clock
        for i in range(6, 11):
            clock.real += slew_ns  # a time service slewing
            infer(w, i)


def test_a_step_is_reported_in_the_session_s_source(tmp_path: Path) -> None:
    path = str(tmp_path / "step.vigil")
    _stepped_log(path, step_ns=-2_000_000_000)
    with LogReader(path) as r:
        steps = list(clock_steps(r.records()))
    assert len(steps) == 1
    assert (steps[0].prev_seq, steps[0].seq) == (6, 7)  # OPENED is seq 1
    assert -2_000_000_000 - 1 <= steps[0].step_ns <= -2_000_000_000 + 1
    assert steps[0].source == "injected" and steps[0].code == "DIA-3120"
    assert "stepped -2.000 s" in steps[0].describe()


def test_slewing_and_a_new_session_are_not_steps(tmp_path: Path) -> None:
    path = str(tmp_path / "slew.vigil")
    _stepped_log(path, step_ns=0, slew_ns=400)  # 400 ppm of the 1 ms between records
    clock = FakeClock(start_ns=1_800_000_000_000_000_000)  # next session: another offset
    with FlightRecorder.open(path, clock=clock) as w:
        infer(w, 99)
    with LogReader(path) as r:
        assert list(clock_steps(r.records())) == []


def test_verify_lists_clock_steps_on_request(tmp_path: Path) -> None:
    path = str(tmp_path / "step.vigil")
    _stepped_log(path, step_ns=3_000_000_000)
    root = str(Path(vigil.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    argv = [sys.executable, "-m", "vigil", "verify", path, "--clock-steps"]
    done = subprocess.run(
        [*argv, "--json"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr  # a step is not damage
    steps = json.loads(done.stdout)["clock_steps"]
    assert [(s["seq"], s["source"], s["code"]) for s in steps] == [(7, "injected", "DIA-3120")]
    text = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=120, check=False
    ).stdout
    assert "INTACT" in text and "[DIA-3120 CLOCK_STEP] seq=7" in text and "+3.000 s" in text


# --- configuration ------------------------------------------------------------------------


def test_the_service_config_names_the_clock() -> None:
    cfg = ServeConfig.from_dict(with_(log={"clock": "tai"}), source="t.toml", base_dir="/etc")
    assert cfg.log.clock == "tai" and cfg.log.clock_device is None
    cfg = ServeConfig.from_dict(
        with_(log={"clock": "ptp", "clock_device": "/dev/ptp0"}), source="t.toml", base_dir="/"
    )
    assert cfg.log.clock_device == Path("/dev/ptp0")


@pytest.mark.parametrize(
    ("log", "code", "key"),
    [
        ({"clock": "gps"}, "DIA-7206", "log].clock"),
        ({"clock": "ptp"}, "DIA-7208", "log].clock_device"),
        ({"clock": "tai", "clock_device": "/dev/ptp0"}, "DIA-7208", "log].clock_device"),
    ],
)
def test_a_bad_clock_config_is_refused(log: dict, code: str, key: str) -> None:
    with pytest.raises(ServiceConfigError) as exc:
        ServeConfig.from_dict(with_(log=log), source="t.toml", base_dir="/etc")
    assert exc.value.code == code and key in str(exc.value), exc.value
