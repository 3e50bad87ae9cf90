"""The ``vigil serve`` configuration file: every error path has its code and key path."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from vigil import keys as _keys
from vigil.cli import main
from vigil.errors import ArtifactTampered, InvalidInput, ServiceConfigError
from vigil.fsm import Policy
from vigil.model import Decoder, DecoderConfig, load_model, verify_model_dir
from vigil.service._config import ServeConfig
from vigil.supervisor import Constant, LastGood
from vigil.testing._models import KNOWN_ANSWER, build_reference

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "vigil.toml"
MINIMAL: dict[str, Any] = {
    "service": {"socket": "run/vigil.sock"},
    "log": {"path": "flight.vigil"},
    "model": {"factory": "vigil.model:TinyReference"},
    "supervisor": {"deadline_ms": 50},
}


def with_(**sections: dict[str, Any]) -> dict[str, Any]:
    """MINIMAL with keys merged into (or, for a None value, removed from) its sections."""
    data = copy.deepcopy(MINIMAL)
    for name, keys in sections.items():
        table = data.setdefault(name, {})
        for key, value in keys.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
    return data


def refused(data: dict[str, Any]) -> ServiceConfigError:
    with pytest.raises(ServiceConfigError) as info:
        ServeConfig.from_dict(data, source="vigil.toml", base_dir="/etc/vigil")
    return info.value


# --- what loads ------------------------------------------------------------------------------


def test_the_example_loads_and_builds_its_parts() -> None:
    cfg = ServeConfig.load(EXAMPLE)
    assert cfg.source == str(EXAMPLE)
    assert cfg.service.socket == Path("/run/vigil/vigil.sock")
    assert cfg.model.factory == "vigil.model:TinyReference"
    assert cfg.model.kwargs == {"seed": 0}
    assert cfg.supervisor.deadline_ns == 50_000_000
    assert cfg.to_policy() == Policy()
    chain = cfg.fallback_chain()
    assert isinstance(chain[0], LastGood)
    assert chain[0].max_age_ns == 500_000_000
    assert isinstance(chain[1], Constant)
    assert torch.equal(chain[1].value, torch.zeros(1, 8))
    contract = cfg.input_contract()
    contract.check(torch.zeros(3, 64))
    assert cfg.metrics.host == "127.0.0.1"
    assert cfg.metrics.port == 9109
    assert cfg.log.ring().segment_size == 1 << 20
    assert cfg.log.ring().segment_count == 64


def test_defaults_of_a_minimal_config() -> None:
    cfg = ServeConfig.from_dict(MINIMAL, source="x.toml", base_dir="/etc/vigil")
    assert cfg.service.max_request_mb == 64
    assert cfg.service.max_clients == 64
    assert cfg.service.read_timeout_s == 30.0
    assert cfg.service.drain_timeout_s == 10.0
    assert cfg.log.durability == "batch"
    assert cfg.log.seal is None
    assert cfg.model.device == "cpu"
    assert cfg.model.input is None
    assert cfg.input_contract() is None
    w = cfg.workers
    assert (w.standby, w.heartbeat_ms, w.heartbeat_timeout_ms) == (True, 100, 1000)
    assert (w.start_timeout_s, w.warmup_calls, w.shm_mb) == (120.0, 3, 16)
    assert cfg.supervisor.fallback == ()
    assert cfg.fallback_chain() == []
    assert not cfg.metrics.enabled
    assert cfg.systemd.notify == "auto"


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "vigil.toml"
    conf.parent.mkdir()
    conf.write_text(
        '[service]\nsocket = "run/v.sock"\n[log]\npath = "/abs/flight.vigil"\n'
        '[log.seal]\nkey = "keys/dev.pem"\n'
        '[model]\ndir = "models/current"\npublic_key = "~/signer.pub"\n'
        "[supervisor]\ndeadline_ms = 2.5\n"
    )
    cfg = ServeConfig.load(conf)
    assert cfg.service.socket == conf.parent / "run" / "v.sock"
    assert cfg.log.path == Path("/abs/flight.vigil")
    assert cfg.log.seal is not None
    assert cfg.log.seal.key == conf.parent / "keys" / "dev.pem"
    assert cfg.model.dir == conf.parent / "models" / "current"
    assert cfg.model.public_key == Path.home() / "signer.pub"
    assert cfg.supervisor.deadline_ns == 2_500_000


def test_value_bounds_make_a_contract_that_rejects_out_of_range_values() -> None:
    cfg = ServeConfig.from_dict(
        with_(model={"input": {"dtype": "int64", "shape": [-1, -1], "min": 0, "max": 255}})
    )
    assert cfg.model.input is not None
    assert (cfg.model.input.min, cfg.model.input.max) == (0, 255)
    contract = cfg.input_contract()
    contract.check(torch.tensor([[0, 17, 255]]))
    for bad, rule in ((256, "max"), (-1, "min")):
        with pytest.raises(InvalidInput) as info:
            contract.check(torch.tensor([[3, bad, 4]]))
        assert (info.value.code, info.value.rule, info.value.index) == ("DIA-2104", rule, (0, 1))
    # whole-valued floats are fine on an integer dtype; floats bound a float dtype as given
    cfg = ServeConfig.from_dict(with_(model={"input": {"dtype": "int32", "max": 7.0}}))
    cfg.input_contract().check(torch.tensor([7], dtype=torch.int32))
    with pytest.raises(InvalidInput):
        cfg.input_contract().check(torch.tensor([8], dtype=torch.int32))
    cfg = ServeConfig.from_dict(with_(model={"input": {"min": -0.5, "max": 0.5}}))
    cfg.input_contract().check(torch.tensor([-0.5, 0.5]))
    with pytest.raises(InvalidInput):
        cfg.input_contract().check(torch.tensor([0.5001]))


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"dtype": "int64", "shape": [-1, -1], "min": 0, "max": 255}, torch.zeros(1, 1).long()),
        ({"dtype": "int32", "shape": [2, -1], "min": 3}, torch.full((2, 1), 3, dtype=torch.int32)),
        ({"shape": [4], "min": -9.5, "max": -1.5}, torch.full((4,), -1.5)),
        ({"dtype": "float16", "shape": [-1, 64]}, torch.zeros(1, 64, dtype=torch.float16)),
    ],
)
def test_the_warmup_input_passes_the_contract(table: dict[str, Any], expected: Any) -> None:
    cfg = ServeConfig.from_dict(with_(model={"input": table}))
    assert cfg.model.input is not None
    warmup = cfg.model.input.warmup_input()
    assert warmup is not None
    assert warmup.dtype == expected.dtype
    assert torch.equal(warmup, expected)
    cfg.input_contract().check(warmup)


def test_a_signed_decoder_config_loads_with_token_bounds(tmp_path: Path) -> None:
    conf = tmp_path / "vigil.toml"
    conf.write_text(
        '[service]\nsocket = "v.sock"\n[log]\npath = "flight.vigil"\n'
        '[model]\ndir = "models/decoder"\npublic_key = "signer.pub"\n'
        '[model.input]\ndtype = "int64"\nshape = [-1, -1]\nmin = 0\nmax = 255\n'
        "[supervisor]\ndeadline_ms = 50\n"
    )
    cfg = ServeConfig.load(conf)
    assert cfg.model.dir == tmp_path / "models" / "decoder"
    assert cfg.model.public_key == tmp_path / "signer.pub"
    assert cfg.model.input is not None
    assert (cfg.model.input.dtype, cfg.model.input.shape) == ("int64", (-1, -1))
    contract = cfg.input_contract()
    contract.check(torch.randint(0, 256, (2, 9)))
    for bad in (256, -1):
        with pytest.raises(InvalidInput) as info:
            contract.check(torch.tensor([[1, 2, bad]]))
        assert info.value.code == "DIA-2104"
    with pytest.raises(InvalidInput) as info:
        contract.check(torch.tensor([[1.0, 2.0]]))  # token ids are integers
    assert info.value.rule == "dtype"


def test_policy_keys_map_onto_the_policy() -> None:
    cfg = ServeConfig.from_dict(
        with_(
            supervisor={
                "policy": {
                    "consecutive_failures": 2,
                    "cooldown_ms": 250,
                    "cooldown_max_ms": 1000.5,
                    "slow_call_ms": 20,
                    "failure_rate": 1,
                    "probe_mode": "live",
                    "max_failed_recoveries": 0,
                    "count_bad_input": True,
                }
            }
        )
    )
    assert cfg.to_policy() == Policy(
        consecutive_failures=2,
        cooldown_ns=250_000_000,
        cooldown_max_ns=1_000_500_000,
        slow_call_ns=20_000_000,
        failure_rate=1.0,
        probe_mode="live",
        max_failed_recoveries=0,
        count_bad_input=True,
    )


def test_listen_forms() -> None:
    def listen(value: str) -> tuple[str, int]:
        m = ServeConfig.from_dict(with_(metrics={"listen": value})).metrics
        return m.host, m.port

    assert listen("0.0.0.0:0") == ("0.0.0.0", 0)
    assert listen(":9109") == ("127.0.0.1", 9109)
    assert listen("[::1]:9109") == ("::1", 9109)


def test_http_section_is_off_by_default_and_validated() -> None:
    assert not ServeConfig.from_dict(MINIMAL).http.enabled
    h = ServeConfig.from_dict(
        with_(http={"listen": ":8000", "model_name": "tiny-1.0", "max_json_mb": 2})
    ).http
    assert (h.enabled, h.host, h.port, h.model_name, h.max_json_mb) == (
        True, "127.0.0.1", 8000, "tiny-1.0", 2,
    )  # fmt: skip
    assert h.max_request_mb == 64 and h.max_connections == 16 and h.timeout_s == 30.0
    for bad, where in (
        ({"model_name": "a/b"}, "[http].model_name"),
        ({"listen": "nohost"}, "[http].listen"),
        ({"max_connections": 0}, "[http].max_connections"),
        ({"timeout_s": -1}, "[http].timeout_s"),
        ({"port": 1}, "port"),
    ):
        assert where in str(refused(with_(http=bad))), bad


# --- the file ------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ServiceConfigError) as info:
        ServeConfig.load(tmp_path / "nope.toml")
    assert info.value.code == "DIA-7202"
    assert "nope.toml" in str(info.value)


@pytest.mark.parametrize("kind", ["fifo", "device", "huge"])
def test_a_config_or_known_answer_that_is_not_a_small_regular_file_is_refused_unread(
    tmp_path: Path, kind: str
) -> None:
    """A FIFO as --config hung `serve --check` for good; /dev/zero grew to GBs in seconds;
    a known-answer file the same (outside audit)."""
    conf = tmp_path / "vigil.toml"
    if kind == "fifo":
        os.mkfifo(conf)
    elif kind == "device":
        conf = Path("/dev/zero")
    else:
        conf.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    with pytest.raises(ServiceConfigError) as info:
        ServeConfig.load(conf)
    assert info.value.code == "DIA-7202"
    assert ("not a regular file" if kind != "huge" else "larger than 1 MiB") in str(info.value)
    if kind == "fifo":
        ka = tmp_path / "ka.toml"
        ka.write_text(
            '[service]\nsocket = "v.sock"\n[log]\npath = "f.vigil"\n'
            '[model]\nfactory = "vigil.model:TinyReference"\n'
            "[supervisor]\ndeadline_ms = 50\n"
            '[supervisor.policy]\nprobe_mode = "known_answer"\n'
            f'[supervisor.known_answer]\nfile = "{conf}"\n'
        )
        with pytest.raises(ServiceConfigError) as info:
            ServeConfig.load(ka).known_answer()
        assert info.value.code == "DIA-7213" and "named pipe" in str(info.value)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("service", "read_timeout_s", 1e10),  # tracebacks in every connection thread
        ("service", "drain_timeout_s", 1e10),  # a traceback at SIGTERM, no CLOSED record
        ("workers", "start_timeout_s", 1e300),  # a traceback at start
        ("supervisor", "deadline_ms", 9223372036),  # every call an ERROR held against the model
        ("supervisor", "deadline_ms", 1e-7),  # refused only at start, after the log was made
        ("metrics", "timeout_s", 1e300),
    ],
)
def test_a_duration_beyond_seven_days_or_below_a_microsecond_is_refused(
    section: str, key: str, value: float
) -> None:
    """`--check` said valid; the service then failed at run time (outside audit)."""
    err = refused(with_(**{section: {key: value}}))
    assert err.code == "DIA-7206" and f"[{section}].{key}" in str(err) and "7 days" in str(err)
    edge = 604800 if key.endswith("_s") else 604_800_000
    ServeConfig.from_dict(with_(**{section: {key: edge}}))  # the bound itself is valid


@pytest.mark.parametrize("chain", [[], ["none"]])
def test_no_fallback_is_said_one_way(chain: list[str]) -> None:
    assert refused(with_(supervisor={"fallback": chain})).code == "DIA-7206"


def test_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text('[service]\nsocket = "/run/x"\nmax_clients = = 3\n')
    with pytest.raises(ServiceConfigError) as info:
        ServeConfig.load(conf)
    err = info.value
    assert err.code == "DIA-7203"
    assert (err.line, err.column) == (3, 15)
    assert str(conf) in str(err)
    assert "line 3" in str(err)


# --- every kind of refusal -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "where"),
    [
        # unknown keys and sections
        (
            with_(service={"socekt": "/x"}),
            "DIA-7204",
            "[service].socekt: unknown key (did you mean 'socket'?)",
        ),
        (with_(servce={}), "DIA-7204", "[servce]: unknown key (did you mean 'service'?)"),
        (
            with_(supervisor={"policy": {"cooldown_ns": 5}}),
            "DIA-7204",
            "[supervisor.policy].cooldown_ns: unknown key (did you mean 'cooldown_ms'?)",
        ),
        (with_(log={"seal": {"key": "k", "evry_ms": 1}}), "DIA-7204", "[log.seal].evry_ms"),
        (
            with_(model={"input": {"dtype": "float32", "shape": [1], "minimum": 0}}),
            "DIA-7204",
            "[model.input].minimum: unknown key (did you mean 'min'?)",
        ),
        # required
        (with_(service={"socket": None}), "DIA-7207", "[service].socket: required key is missing"),
        (
            {k: v for k, v in MINIMAL.items() if k != "log"},
            "DIA-7207",
            "[log]: required section is missing",
        ),
        (with_(supervisor={"deadline_ms": None}), "DIA-7207", "[supervisor].deadline_ms: required"),
        (with_(model={"factory": None}), "DIA-7207", "[model].factory: required: dir"),
        (
            with_(model={"factory": None, "dir": "m"}),
            "DIA-7207",
            "[model].public_key: required with dir",
        ),
        (
            with_(supervisor={"fallback": "constant"}),
            "DIA-7207",
            "[supervisor].constant_shape: required",
        ),
        (with_(log={"seal": {"every_ms": 5}}), "DIA-7207", "[log.seal].key: a seal needs"),
        # types
        (
            {**MINIMAL, "service": "nope"},
            "DIA-7205",
            "[service]: must be a table, got 'nope' (string)",
        ),
        (
            with_(supervisor={"deadline_ms": "50"}),
            "DIA-7205",
            "[supervisor].deadline_ms: must be a number, got '50' (string)",
        ),
        (
            with_(supervisor={"deadline_ms": True}),
            "DIA-7205",
            "[supervisor].deadline_ms: must be a number",
        ),
        (
            with_(service={"max_clients": 1.5}),
            "DIA-7205",
            "[service].max_clients: must be an integer, got 1.5 (float)",
        ),
        (with_(workers={"standby": 1}), "DIA-7205", "[workers].standby: must be true or false"),
        (with_(service={"socket": 3}), "DIA-7205", "[service].socket: must be a non-empty string"),
        (
            with_(model={"input": {"shape": "1,64"}}),
            "DIA-7205",
            "[model.input].shape: must be a list of integers",
        ),
        (
            with_(supervisor={"fallback": 3}),
            "DIA-7205",
            "[supervisor].fallback: must be a string or a list",
        ),
        (
            with_(supervisor={"policy": {"window": 2.0}}),
            "DIA-7205",
            "[supervisor.policy].window: must be an integer",
        ),
        (
            with_(systemd={"notify": "yes"}),
            "DIA-7205",
            '[systemd].notify: must be true, false or "auto"',
        ),
        (with_(model={"kwargs": [1]}), "DIA-7205", "[model].kwargs: must be a table"),
        (
            with_(model={"input": {"min": True}}),
            "DIA-7205",
            "[model.input].min: must be a number, got True (boolean)",
        ),
        (
            with_(model={"input": {"max": "255"}}),
            "DIA-7205",
            "[model.input].max: must be a number, got '255' (string)",
        ),
        # ranges and choices
        (
            with_(supervisor={"deadline_ms": -3}),
            "DIA-7206",
            "[supervisor].deadline_ms: must be a positive number, got -3",
        ),
        (with_(supervisor={"deadline_ms": float("nan")}), "DIA-7206", "[supervisor].deadline_ms"),
        (
            with_(service={"max_clients": 0}),
            "DIA-7206",
            "[service].max_clients: must be >= 1 and <= 65536, got 0",
        ),
        (
            with_(log={"durability": "sometimes"}),
            "DIA-7206",
            "[log].durability: must be one of none, batch, always; got 'sometimes'",
        ),
        (with_(log={"segment_kb": 10}), "DIA-7206", "[log].segment_kb: must be a multiple of 4"),
        (with_(log={"segments": 1}), "DIA-7206", "[log].segments: must be >= 2"),
        (
            with_(model={"device": "tpu"}),
            "DIA-7206",
            '[model].device: must be "cpu", "cuda" or "cuda:N", got \'tpu\'',
        ),
        (
            with_(model={"factory": "vigil.model.TinyReference"}),
            "DIA-7206",
            "[model].factory: must look like 'package.module:function'",
        ),
        (
            with_(model={"input": {"dtype": "float"}}),
            "DIA-7206",
            "[model.input].dtype: must be one of",
        ),
        (
            with_(model={"input": {"shape": [-2, 64]}}),
            "DIA-7206",
            "[model.input].shape: dims must be -1",
        ),
        (
            with_(model={"input": {"min": float("-inf")}}),
            "DIA-7206",
            "[model.input].min: must be finite (omit it for no bound), got -inf",
        ),
        (
            with_(model={"input": {"max": float("nan")}}),
            "DIA-7206",
            "[model.input].max: must be finite",
        ),
        (
            with_(supervisor={"fallback": "cached"}),
            "DIA-7206",
            "[supervisor].fallback: each entry must be one of none, last_good, constant; "
            "got 'cached'",
        ),
        (
            with_(supervisor={"fallback": "constant", "constant_shape": [-1]}),
            "DIA-7206",
            "[supervisor].constant_shape: dims must be sizes >= 0",
        ),
        (
            with_(metrics={"listen": "localhost"}),
            "DIA-7206",
            '[metrics].listen: must be "host:port"',
        ),
        (
            with_(metrics={"listen": "127.0.0.1:70000"}),
            "DIA-7206",
            "[metrics].listen: port must be in 0..65535",
        ),
        (
            with_(supervisor={"policy": {"failure_rate": 1.5}}),
            "DIA-7206",
            "[supervisor.policy]: failure_rate=1.5: must be in (0, 1]",
        ),
        (
            with_(supervisor={"policy": {"cooldown_ms": 0}}),
            "DIA-7206",
            "[supervisor.policy].cooldown_ms: must be a positive number, got 0",
        ),
        (
            with_(supervisor={"policy": {"probe_mode": "hope"}}),
            "DIA-7206",
            "[supervisor.policy]: probe_mode='hope'",
        ),
        # inconsistent combinations
        (
            with_(model={"dir": "m", "public_key": "k"}),
            "DIA-7208",
            "[model].dir: give either dir (with public_key) or factory, not both",
        ),
        (with_(model={"public_key": "k"}), "DIA-7208", "[model].public_key: only with dir"),
        (
            with_(model={"factory": None, "dir": "m", "public_key": "k", "kwargs": {"a": 1}}),
            "DIA-7208",
            "[model].kwargs: only with factory",
        ),
        (
            with_(workers={"heartbeat_ms": 500, "heartbeat_timeout_ms": 500}),
            "DIA-7208",
            "[workers].heartbeat_timeout_ms: must exceed heartbeat_ms (500), got 500",
        ),
        (
            with_(supervisor={"fallback": ["none", "last_good"]}),
            "DIA-7208",
            '[supervisor].fallback: "none" cannot be combined',
        ),
        (
            with_(supervisor={"fallback": ["last_good", "last_good"]}),
            "DIA-7208",
            "[supervisor].fallback: lists a fallback twice",
        ),
        (
            with_(supervisor={"last_good_max_age_ms": 10}),
            "DIA-7208",
            '[supervisor].last_good_max_age_ms: set, but fallback does not include "last_good"',
        ),
        (
            with_(supervisor={"policy": {"min_calls": 30, "window": 20}}),
            "DIA-7208",
            "[supervisor.policy]: min_calls=30 exceeds window=20",
        ),
        (
            with_(supervisor={"policy": {"cooldown_ms": 10, "cooldown_max_ms": 5}}),
            "DIA-7208",
            "[supervisor.policy]: cooldown_max_ms must be >= cooldown_ms",
        ),
        (
            with_(supervisor={"policy": {"probe_mode": "known_answer"}}),
            "DIA-7208",
            "[supervisor.policy].probe_mode: known-answer probes need a known input and output: "
            "add [supervisor.known_answer]",
        ),
        (
            with_(supervisor={"policy": {"probe_interval_ms": 1000}}),
            "DIA-7208",
            "[supervisor.policy].probe_interval_ms: known-answer probes",
        ),
        (
            with_(supervisor={"known_answer": {"file": "ka.safetensors"}}),
            "DIA-7208",
            "[supervisor].known_answer: set, but no probe uses it",
        ),
        (
            with_(supervisor={"known_answer": {"atol": 0.1}, "policy": {"probe_interval_ms": 9}}),
            "DIA-7207",
            "[supervisor.known_answer].file: required key is missing",
        ),
        (
            with_(
                supervisor={
                    "known_answer": {"file": "ka.safetensors", "atol": -1},
                    "policy": {"probe_interval_ms": 9},
                }
            ),
            "DIA-7206",
            "[supervisor.known_answer].atol: must be a number >= 0, got -1",
        ),
        (
            with_(model={"input": {"min": 10, "max": 9.5}}),
            "DIA-7208",
            "[model.input].min: 10 exceeds max = 9.5: no value can pass",
        ),
        (
            with_(model={"input": {"dtype": "int64", "min": 0, "max": 255.5}}),
            "DIA-7208",
            "[model.input].max: 255.5 is fractional, but dtype int64 holds whole numbers only, "
            "so the bound would act as 255",
        ),
        (
            with_(model={"input": {"dtype": "bool", "min": 0.5}}),
            "DIA-7208",
            "[model.input].min: 0.5 is fractional, but dtype bool holds whole numbers only",
        ),
        (
            with_(model={"input": {"dtype": "uint8", "min": 256}}),
            "DIA-7208",
            "[model.input].min: 256 is above the largest uint8 value (255): no input can pass",
        ),
        (
            with_(model={"input": {"dtype": "int8", "max": -129}}),
            "DIA-7208",
            "[model.input].max: -129 is below the smallest int8 value (-128)",
        ),
        (
            with_(log={"segments": 4, "frozen_quota": 3}),
            "DIA-7208",
            "[log].segments: inconsistent ring geometry: frozen_quota=3",
        ),
    ],
)
def test_refusals_name_code_file_and_key(data: dict[str, Any], code: str, where: str) -> None:
    err = refused(data)
    assert err.code == code, str(err)
    assert str(err).startswith(f"{code} "), str(err)
    assert f"vigil.toml: {where}" in str(err), str(err)
    assert err.file == "vigil.toml"


def test_workers_active_and_max_queue() -> None:
    assert ServeConfig.from_dict(with_()).workers.active == 1  # the default: one, as before
    cfg = ServeConfig.from_dict(with_(workers={"active": 2, "max_queue": 0}))
    assert (cfg.workers.active, cfg.workers.max_queue) == (2, 0)
    assert refused(with_(workers={"active": 0})).key == "[workers].active"
    assert refused(with_(workers={"active": 65})).key == "[workers].active"
    assert refused(with_(workers={"max_queue": -1})).key == "[workers].max_queue"


def test_unknown_key_lists_the_known_keys() -> None:
    err = refused(with_(workers={"heartbeat": 5}))
    known = "known keys here: active, heartbeat_ms, heartbeat_timeout_ms, max_queue, shm_mb"
    assert known in str(err)
    assert err.key == "[workers].heartbeat"


def test_refusals_are_config_errors() -> None:
    from vigil.errors import ConfigError

    assert isinstance(refused(with_(service={"socket": None})), ConfigError | ValueError)


def test_every_key_is_documented_and_in_the_example() -> None:
    from vigil.service._config import _KEYS

    docs = (EXAMPLE.parent.parent / "docs" / "SERVICE.md").read_text(encoding="utf-8")
    example = EXAMPLE.read_text(encoding="utf-8")
    for section, keys in _KEYS.items():
        assert f"[{section}]" in docs, section
        for key in keys:
            assert f"`{key}`" in docs or f"[{section}.{key}]" in docs, f"[{section}].{key}"
            assert key in example, f"[{section}].{key} not in examples/vigil.toml"


# --- the known answer of the probes ----------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny decoder exported by ``vigil model export-reference``: (directory, public key)."""
    tmp = tmp_path_factory.mktemp("exported")
    assert main(["model", "keygen", "--out", str(tmp / "k")]) == 0
    assert main(["model", "export-reference", str(tmp / "m"), "--key", str(tmp / "k")]) == 0
    return tmp / "m", tmp / "k.pub"


def probing(model: dict[str, Any], file: str = KNOWN_ANSWER) -> dict[str, Any]:
    """MINIMAL with ``model`` (its factory dropped unless given) and known-answer probes."""
    return with_(
        model={"factory": None} | model,
        supervisor={
            "known_answer": {"file": file, "atol": 1e-4},
            "policy": {"probe_interval_ms": 500},
        },
    )


def test_the_known_answer_comes_from_the_signed_directory(exported: tuple[Path, Path]) -> None:
    model, public = exported
    bounds = {"dtype": "int64", "shape": [-1, -1], "min": 0, "max": 255}
    cfg = ServeConfig.from_dict(
        probing({"dir": str(model), "public_key": str(public), "input": bounds})
    )
    got = cfg.known_answer()
    assert got is not None
    known, digest = got
    artifact = verify_model_dir(model, _keys.load_public(public))
    assert digest == artifact.digest and known.atol == 1e-4
    reference = load_model(model, _keys.load_public(public), build_reference).module
    assert known.input.shape == (1, 8) and known.matches(reference(known.input))
    other = Decoder(DecoderConfig.tiny(), seed=1)  # another model fails the probe
    assert not known.matches(other(known.input))


def test_known_answer_refusals(exported: tuple[Path, Path], tmp_path: Path) -> None:
    model, public = exported
    signed = {"dir": str(model), "public_key": str(public)}

    def refused_at_start(data: dict[str, Any]) -> ServiceConfigError:
        cfg = ServeConfig.from_dict(data, source="vigil.toml", base_dir=tmp_path)
        with pytest.raises(ServiceConfigError) as info:
            cfg.known_answer()
        assert info.value.code == "DIA-7213", str(info.value)
        assert info.value.key == "[supervisor.known_answer].file"
        return info.value

    # not signed with the model: a file dropped into the directory afterwards does not count
    shutil.copy(model / KNOWN_ANSWER, tmp_path / "extra.safetensors")
    err = refused_at_start(probing(signed, file="extra.safetensors"))
    assert "is not in the signed manifest" in err.message
    # its input breaks the contract
    tight = signed | {"input": {"dtype": "int64", "min": 0, "max": 3}}
    assert "its input breaks [model.input]" in refused_at_start(probing(tight)).message
    # from a path (a factory model): unreadable, not safetensors, not input/expected
    factory = {"factory": "vigil.model:TinyReference"}
    assert "cannot read" in refused_at_start(probing(factory, file="missing.st")).message
    (tmp_path / "junk.st").write_bytes(b"not safetensors at all")
    assert "not a safetensors file" in refused_at_start(probing(factory, file="junk.st")).message
    (tmp_path / "one.st").write_bytes(safetensors.torch.save({"input": torch.ones(1, 64)}))
    err = refused_at_start(probing(factory, file="one.st"))
    assert "must hold exactly 'input' and 'expected'; it holds input" in err.message


def test_a_tampered_known_answer_is_refused_like_tampered_weights(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    model, public = exported
    copy_dir = tmp_path / "m"
    shutil.copytree(model, copy_dir)
    data = bytearray((copy_dir / KNOWN_ANSWER).read_bytes())
    data[-1] ^= 0x01  # one bit of the expected logits
    (copy_dir / KNOWN_ANSWER).write_bytes(bytes(data))
    cfg = ServeConfig.from_dict(probing({"dir": str(copy_dir), "public_key": str(public)}))
    with pytest.raises(ArtifactTampered) as info:
        cfg.known_answer()
    assert info.value.code == "DIA-5106" and info.value.context["file"] == KNOWN_ANSWER


def test_serve_check_reads_the_known_answer(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, public = exported
    conf = tmp_path / "vigil.toml"
    conf.write_text(
        f'[service]\nsocket = "v.sock"\n[log]\npath = "f.vigil"\n'
        f'[model]\ndir = "{model}"\npublic_key = "{public}"\n'
        "[supervisor]\ndeadline_ms = 50\n"
        '[supervisor.known_answer]\nfile = "known_answer.safetensors"\n'
        "[supervisor.policy]\nprobe_interval_ms = 1000\n"
    )
    assert main(["serve", "--config", str(conf), "--check"]) == 0
    assert "valid; known answer (1, 8) read" in capsys.readouterr().out
    conf.write_text(conf.read_text().replace("known_answer.safetensors", "nope.safetensors"))
    assert main(["serve", "--config", str(conf), "--check"]) == 2
    assert "DIA-7213" in capsys.readouterr().err


# --- hostile files (found by tests/fuzz/fuzz_config.py) ---------------------------------------

_MINIMAL_TOML = (
    '[service]\nsocket = "s.sock"\n[log]\npath = "f.vigil"\n'
    '[model]\nfactory = "m:f"\n[supervisor]\ndeadline_ms = 5\n'
)


@pytest.mark.parametrize(
    ("text", "code", "where"),
    [
        # integers past 64 bits: OverflowError (float conversion) or ValueError (str) before
        (_MINIMAL_TOML.replace("= 5", "= 1" + "0" * 400), "DIA-7206", "[supervisor].deadline_ms"),
        (_MINIMAL_TOML.replace("= 5", "= 0x" + "f" * 5000), "DIA-7206", "[supervisor].deadline_ms"),
        (_MINIMAL_TOML + "[model.input]\nmin = -1" + "0" * 30, "DIA-7206", "[model.input].min"),
        (_MINIMAL_TOML.replace("= 5", "= " + "1" * 5000), "DIA-7203", "not valid TOML"),
        (_MINIMAL_TOML + "[workers]\nstandby = " + "[" * 3000 + "]" * 3000, "DIA-7203", "nested"),
        # paths: RuntimeError from Path.expanduser before; a NUL only failed when opened
        (_MINIMAL_TOML.replace('"s.sock"', '"~no-such-user-x/s"'), "DIA-7206", "[service].socket"),
        (_MINIMAL_TOML.replace('"f.vigil"', '"f\\u0000.vigil"'), "DIA-7206", "[log].path"),
        # a constant the dtype cannot hold: RuntimeError or a NaN fallback before
        (
            _MINIMAL_TOML + 'fallback = "constant"\nconstant_shape = [1]\nconstant_value = 300\n'
            'constant_dtype = "uint8"\n',
            "DIA-7208",
            "[supervisor].constant_value",
        ),
        (
            _MINIMAL_TOML + 'fallback = "constant"\nconstant_shape = [1]\nconstant_value = nan\n',
            "DIA-7208",
            "[supervisor].constant_value",
        ),
        # tensors the service would allocate at start: 40 TB before
        (
            _MINIMAL_TOML + 'fallback = "constant"\nconstant_shape = [100000, 100000, 1000]\n',
            "DIA-7208",
            "[supervisor].constant_shape",
        ),
        (_MINIMAL_TOML + "[model.input]\nshape = [-1, 100000, 100000]\n", "DIA-7208", "shape"),
        (_MINIMAL_TOML + "[model.input]\nshape = [" + "1, " * 9 + "1]\n", "DIA-7206", "shape"),
        (_MINIMAL_TOML + "[model.input]\nshape = [4294967296]\n", "DIA-7206", "shape"),
    ],
)
def test_hostile_files_are_refused_with_a_code(
    tmp_path: Path, text: str, code: str, where: str
) -> None:
    conf = tmp_path / "vigil.toml"
    conf.write_text(text)
    with pytest.raises(ServiceConfigError) as info:
        ServeConfig.load(conf)
    assert info.value.code == code, str(info.value)
    assert where in str(info.value)
    assert len(str(info.value)) < 600


def test_a_tensor_that_fits_shared_memory_loads() -> None:
    data = with_(
        supervisor={"fallback": "constant", "constant_shape": [1024, 1024], "constant_value": 1},
        workers={"shm_mb": 4},
        model={"input": {"shape": [-1, 1 << 20], "dtype": "float32", "min": -(1 << 62)}},
    )
    cfg = ServeConfig.from_dict(data)
    assert cfg.fallback_chain()[0].value.shape == (1024, 1024)
    assert refused(with_(**{**data, "workers": {"shm_mb": 3}})).code == "DIA-7208"


# --- limits that were constants (issue 13) ---------------------------------------------------


def test_the_buffer_budget_and_the_metrics_limits_are_config_keys() -> None:
    data = with_(service={"max_buffered_mb": 512}, metrics={"listen": ":0", "timeout_s": 2.5})
    data["metrics"]["max_connections"] = 32
    cfg = ServeConfig.from_dict(data, source="vigil.toml", base_dir="/etc/vigil")
    assert cfg.service.max_buffered_mb == 512
    assert (cfg.metrics.timeout_s, cfg.metrics.max_connections) == (2.5, 32)
    defaults = ServeConfig.from_dict(MINIMAL, source="vigil.toml", base_dir="/etc/vigil")
    assert defaults.service.max_buffered_mb is None  # the server's 4 x max_request_mb
    assert (defaults.metrics.timeout_s, defaults.metrics.max_connections) == (10.0, 8)


@pytest.mark.parametrize(
    ("sections", "code", "key"),
    [
        ({"service": {"max_buffered_mb": 8, "max_request_mb": 64}}, "DIA-7208", "max_buffered_mb"),
        ({"service": {"max_buffered_mb": 0}}, "DIA-7206", "max_buffered_mb"),
        ({"metrics": {"listen": ":0", "timeout_s": 0}}, "DIA-7206", "timeout_s"),
        ({"metrics": {"listen": ":0", "max_connections": 0}}, "DIA-7206", "max_connections"),
        ({"metrics": {"listen": ":0", "max_connections": 5000}}, "DIA-7206", "max_connections"),
    ],
)
def test_bad_limits_are_refused(sections: dict[str, Any], code: str, key: str) -> None:
    error = refused(with_(**sections))
    assert error.code == code and key in str(error), error


def test_a_socket_path_no_client_could_connect_to_is_refused() -> None:
    """A 180-byte socket path started ("serving on ..."), and no Client could reach it."""
    err = refused(with_(service={"socket": "/run/" + "s" * 175}))
    assert err.code == "DIA-7206" and "at most 107" in str(err)
    ServeConfig.from_dict(with_(service={"socket": "/run/" + "s" * 102}))  # 107: valid


@pytest.mark.parametrize(
    ("section", "key", "make"),
    [
        ("log", "path", "dir"),  # DIA-3001 at start, after --check said valid
        ("log", "path", "fifo"),
        ("service", "socket", "dir"),  # DIA-7201 at start
        ("model", "dir", "fifo"),  # a 120 s worker wait, then DIA-7002
        ("model", "public_key", "fifo"),
    ],
)
def test_check_refuses_a_path_that_names_the_wrong_kind_of_thing(
    tmp_path: Path, section: str, key: str, make: str
) -> None:
    target = tmp_path / f"{section}-{key}"
    target.mkdir() if make == "dir" else os.mkfifo(target)
    data = with_(**{section: {key: str(target)}})
    if section == "model":
        data["model"] = {"dir": str(tmp_path), "public_key": str(tmp_path / "k.pub")}
        (tmp_path / "k.pub").write_text("-")
        data["model"][key] = str(target)
    cfg = ServeConfig.from_dict(data, source="vigil.toml", base_dir=tmp_path)
    with pytest.raises(ServiceConfigError) as info:
        cfg.check_paths(strict=False)
    assert info.value.code == "DIA-7206" and f"[{section}].{key}" in str(info.value)
    assert ("a directory" if make == "dir" else "a named pipe") in str(info.value)


def test_check_notes_what_is_missing_and_start_refuses_it(tmp_path: Path) -> None:
    cfg = ServeConfig.from_dict(
        with_(log={"path": str(tmp_path / "nowhere" / "f.vigil")}), base_dir=tmp_path
    )
    (note,) = [n for n in cfg.check_paths(strict=False) if "[log].path" in n]
    assert "does not exist on this machine" in note
    with pytest.raises(ServiceConfigError, match=r"\[log\].path"):
        cfg.check_paths()  # start-up: strict
