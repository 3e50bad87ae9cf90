"""Regenerate the seed corpora: python tests/fuzz/make_corpus.py [target ...]

Seeds are small valid inputs of each harness (plus a few near misses), built from the golden
logs, the example service config and encoders of the frames, contracts and manifests. The
fuzzers add the inputs they find to the same folders; keep what is committed small (< 2 MB in
all). Reproducers of findings go to ``corpus/<target>/`` once fixed, ``findings/<target>/``
while not.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT)]

import torch  # noqa: E402

from vigil.auditlog import FlightRecorder, RingConfig, Sealer  # noqa: E402

from conftest import FakeClock  # noqa: E402

TINY = RingConfig(size=4096 + 4 * 8192, segment_size=8192)
MS = 1_000_000


def _put(target: str, name: str, data: bytes) -> None:
    folder = HERE / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def supervisor_log(path: Path) -> bytes:
    """A short supervised session with faults: policy and restore annotations, transitions."""
    from vigil.fsm import Policy
    from vigil.supervisor import Constant, Supervisor
    from vigil.testing._faults import Fault, FaultPlan, FaultyModel

    clock = FakeClock()
    plan = FaultPlan(7, clock=clock.monotonic_ns, sleep=clock.sleep)
    plan.with_probability(0.2, Fault.EXCEPTION).with_probability(0.1, Fault.NAN)
    policy = Policy(
        consecutive_failures=2,
        window=6,
        min_calls=3,
        failure_rate=0.5,
        cooldown_ns=3 * MS,
        probes_required=2,
        probe_mode="live",
        max_failed_recoveries=1000,
    )
    with Supervisor(
        FaultyModel(lambda x: x * 2, plan),
        log=str(path),
        clock=clock,
        ring=TINY,
        policy=policy,
        fallback=Constant(torch.zeros(1, 4)),
        isolation="inline",
    ) as sup:
        for _ in range(60):
            clock.advance(MS)
            sup.infer(torch.ones(1, 4))
    return path.read_bytes()


def sealed_log(path: Path) -> bytes:
    from vigil import keys as _keys

    sealer = Sealer(_keys.generate(), every_records=8, every_ms=0)
    with FlightRecorder.create(path, TINY, sealer=sealer, clock=FakeClock()) as w:
        for i in range(40):
            w.annotate("note", f"record {i}")
    return path.read_bytes()


def reader() -> None:
    import tempfile

    data = ROOT / "tests" / "data"
    golden, torn = (data / "golden-v1.vigil").read_bytes(), (data / "golden-v1-torn.vigil")
    with tempfile.TemporaryDirectory() as tmp:
        sup = supervisor_log(Path(tmp) / "sup.vigil")
        sealed = sealed_log(Path(tmp) / "sealed.vigil")
    cases = ROOT / "tests" / "conformance" / "cases"
    for name, image in (
        ("golden", golden),
        ("torn", torn.read_bytes()),
        ("supervisor", sup),
        ("sealed", sealed),
        # format 1.2: traced bodies, deferred digests and their OUTPUT_DIGEST records,
        # digests pending at a crash, a digest naming no call
        ("golden-v1.2", (data / "golden-v1.2.vigil").read_bytes()),
        ("v12-pending", (cases / "v12-digests-pending-at-crash" / "log.vigil").read_bytes()),
        ("v12-unexpected", (cases / "v12-digest-unexpected" / "log.vigil").read_bytes()),
    ):
        _put("reader", f"{name}-plain", b"\x00" + image)
        _put("reader", f"{name}-reseal-slow", b"\x03" + image)


def config() -> None:
    example = (ROOT / "examples" / "vigil.toml").read_bytes()
    _put("config", "example.toml", example)
    minimal = (
        b'[service]\nsocket = "s.sock"\n[log]\npath = "f.vigil"\n'
        b'[model]\nfactory = "m:f"\n[supervisor]\ndeadline_ms = 5\n'
    )
    _put("config", "minimal.toml", minimal)
    _put(
        "config",
        "signed-dir.toml",
        minimal.replace(b'factory = "m:f"', b'dir = "m"\npublic_key = "k.pub"')
        + b'[model.input]\ndtype = "int64"\nshape = [-1, -1]\nmin = 0\nmax = 31999\n'
        + b'[supervisor.policy]\nprobe_mode = "known_answer"\n'
        + b'[supervisor.known_answer]\nfile = "ka.safetensors"\natol = 0\n'
        + b'[log.seal]\nkey = "k.pem"\nfss = "f.fss"\nevery_records = 10\n',
    )
    _put(
        "config",
        "constant.toml",
        minimal
        + b'fallback = "constant"\nconstant_shape = [2, 3]\nconstant_dtype = "int8"\n'
        + b"constant_value = -7\n[workers]\nstandby = false\nshm_mb = 1\n"
        + b'[metrics]\nlisten = "[::1]:0"\n[systemd]\nnotify = true\n',
    )


def protocol() -> None:
    from vigil.service import _protocol as P

    rid = bytes(range(16))

    def frame(ftype: P.FrameType, body: list[P.Buffer]) -> bytes:
        return b"".join(bytes(b) for b in P.encode_frame(ftype, rid, body))

    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    payloads = {
        "tensor": P.encode_tensors(x),
        "mapping": P.encode_tensors({"ids": torch.tensor([[1, 2, 3]]), "m": torch.ones(3) > 0}),
        "sequence": P.encode_tensors((x.half(), torch.zeros(0, 4, dtype=torch.int8))),
    }
    for name, parts in payloads.items():
        _put("protocol", f"payload-{name}", b"\x02" + b"".join(bytes(b) for b in parts))
        _put("protocol", f"infer-{name}", b"\x00" + frame(P.FrameType.INFER, parts))
    result = P.encode_result(
        (x, x.double()), served_by=1, state=1, outcome=0, seq=42, code="DIA-4001",
        reason="ok", answer_age_ns=0, latency_ns=1234,
    )  # fmt: skip
    error = P.encode_error(P.ErrorClass.INVALID_INPUT, "DIA-2101", "bad shape", detail={"a": [1]})
    health = P.encode_health(True, "NORMAL", {"workers": 2, "x": {"y": None}})
    _put("protocol", "result-body", b"\x03" + b"".join(bytes(b) for b in result))
    _put("protocol", "error-body", b"\x04" + bytes(error[0]))
    _put("protocol", "health-body", b"\x05" + bytes(health[0]))
    _put("protocol", "result-frame", b"\x80" + frame(P.FrameType.RESULT, result))
    _put("protocol", "error-frame", b"\x80" + frame(P.FrameType.ERROR, error))
    _put("protocol", "health-frame", b"\x80" + frame(P.FrameType.HEALTH_REPLY, health))
    _put("protocol", "ping-header", b"\x01" + frame(P.FrameType.PING, []))


def contracts() -> None:
    def seed(name: str, doc: dict[str, object], pool: bytes) -> None:
        _put("contracts", name, json.dumps(doc).encode() + b"\n" + pool)

    floats = torch.tensor([0.5, -1.0, 3.0, 7.25, 0.0, 2.0], dtype=torch.float32)
    seed(
        "float-bounds",
        {"spec": {"shape": [2, 3], "dtype": "float32", "min": -1, "max": 8}, "tensor":
         {"dtype": "float32", "shape": [2, 3]}},
        floats.numpy().tobytes(),
    )  # fmt: skip
    seed(
        "int-named-dims",
        {"spec": {"shape": ["...", "n", 2], "dtype": "int64", "min": 0, "max": 31999},
         "tensor": {"dtype": "int64", "shape": [1, 3, 2]},
         "named": {"spec": {"shape": ["n"], "dtype": "bool"}, "tensor":
                   {"dtype": "bool", "shape": [3]}}},
        torch.arange(6, dtype=torch.int64).numpy().tobytes() + b"\x01\x00\x01",
    )  # fmt: skip
    seed(
        "nan-unbounded",
        {"spec": {"finite": False, "max": 1.5}, "tensor": {"dtype": "float16", "grad": True}},
        torch.tensor([float("nan"), 1.0, float("-inf")], dtype=torch.float16).numpy().tobytes(),
    )
    seed(
        "uint64-high",
        {"spec": {"dtype": "uint64", "max": 9007199254740993}, "tensor": {"dtype": "uint64"}},
        (2**64 - 1).to_bytes(8, "little") + (5).to_bytes(8, "little"),
    )
    seed(
        "bf16-transposed",
        {"spec": {"shape": [None, 2], "min": -2.5}, "tensor":
         {"dtype": "bfloat16", "shape": [2, 2], "transpose": True}},
        bytes(range(8)),
    )  # fmt: skip
    seed("meta", {"spec": {"device": "cpu"}, "tensor": {"meta": True, "shape": [4]}}, b"")
    seed(
        "complex", {"spec": {"dtype": "complex64"}, "tensor": {"dtype": "complex64"}}, b"\x7f" * 16
    )
    seed(
        "float8",
        {"spec": {"min": 0}, "tensor": {"dtype": "float8_e4m3fn"}},
        bytes(range(0, 255, 9)),
    )


def artifact() -> None:
    import safetensors.torch

    from vigil.model import Decoder, DecoderConfig, TinyReference
    from vigil.model import _manifest as M

    from fuzz_artifact import KEY, join

    tiny = {"model": "tiny-reference", "seed": 1, "hidden": 2}
    small = DecoderConfig.from_dict(
        {**DecoderConfig.preset("tiny").to_dict(), "vocab_size": 16, "hidden_size": 8,
         "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 8,
         "max_positions": 16, "kv_cache_capacity": 16}
    )  # fmt: skip
    models = {
        "tiny": (tiny, TinyReference(seed=1, hidden=2)),
        "decoder": ({"model": "decoder", "decoder": small.to_dict()}, Decoder(small)),
    }
    for name, (config, module) in models.items():
        weights = safetensors.torch.save(
            {k: v.contiguous() for k, v in module.state_dict().items()}
        )
        entry = M.FileEntry(hashlib.sha256(weights).digest(), len(weights))
        manifest = M.encode(
            name=name, version="1", config=config, key_id=KEY.public.key_id,
            files={M.WEIGHTS: entry},
        )  # fmt: skip
        _put("artifact", f"{name}", join(manifest, weights))
        _put("artifact", f"{name}-manifest-only", join(manifest, b""))


def kserve() -> None:
    """Infer requests as tritonclient and curl send them: JSON tensors of each datatype, the
    binary-data extension, trace context and a rate-limit class, on every path kind."""

    def tensor(datatype: str, shape: list[int], data: list[Any] | None, **params: Any) -> dict:
        spec: dict[str, Any] = {"name": "input", "datatype": datatype, "shape": shape}
        if data is not None:
            spec["data"] = data
        if params:
            spec["parameters"] = params
        return spec

    def request(*inputs: dict, **params: Any) -> bytes:
        doc: dict[str, Any] = {"inputs": list(inputs)}
        if params:
            doc["parameters"] = params
        return json.dumps(doc).encode()

    for datatype, data in (
        ("FP32", [1.5, -2]),
        ("FP16", [1, 2]),
        ("INT64", [1, 2]),
        ("UINT8", [0, 255]),
    ):
        _put(
            "kserve", f"json-{datatype.lower()}", b"\x00" + request(tensor(datatype, [1, 2], data))
        )
    _put("kserve", "json-versioned", b"\x01" + request(tensor("FP32", [1, 2], [1, 2])))
    _put("kserve", "json-routed", b"\x02" + request(tensor("FP32", [1, 2], [1, 2])))
    _put(
        "kserve", "json-batch", b"\x00" + request(tensor("FP32", [3, 2], [[1, 2], [3, 4], [5, 6]]))
    )
    _put(
        "kserve",
        "json-outputs",
        b"\x00" + request(tensor("FP32", [1, 2], [1, 2]), binary_data_output=True),
    )
    head = request(tensor("FP32", [1, 2], None, binary_data_size=8), binary_data_output=True)
    raw = struct.pack("<2f", 1.5, -2.0)
    _put("kserve", "binary", b"\x04" + struct.pack("<H", len(head)) + head + raw)
    tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    traced = tp + b"\ncongo=t61rcWkgMzE,rojo=00f067aa0ba902b7\n"
    _put("kserve", "traced", b"\x08" + traced + request(tensor("FP32", [1, 2], [1, 2])))
    _put("kserve", "classed", b"\x10priority\n" + request(tensor("FP32", [1, 2], [1, 2])))
    _put(
        "kserve",
        "everything",
        b"\x1c" + struct.pack("<H", len(head)) + traced + b"bulk\n" + head + raw,
    )
    for name, path in (
        ("health", "v2/health/ready"),
        ("metadata", "v2/models/m"),
        ("other", "v2/models/x/infer"),
    ):
        _put(
            "kserve",
            f"path-{name}",
            b"\x03" + path.encode() + b"\n" + request(tensor("FP32", [1, 2], [1, 2])),
        )


def grpc() -> None:
    """ModelInfer requests as tritonclient.grpc builds them: raw and typed contents of each
    datatype, outputs asked for, an id, parameters; each with and without trace metadata."""
    import numpy as np
    from tritonclient.grpc import service_pb2 as pb

    def request(datatype: str, shape: list[int], raw: bytes | None, **contents: Any) -> bytes:
        tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype=datatype, shape=shape)
        if contents:
            tensor.contents.CopyFrom(pb.InferTensorContents(**contents))
        message = pb.ModelInferRequest(model_name="m", id="req-1", inputs=[tensor])
        if raw is not None:
            message.raw_input_contents.append(raw)
        return message.SerializeToString()

    pair = np.array([[1.5, -2.0]], np.float32)
    seeds = {
        "raw-fp32": request("FP32", [1, 2], pair.tobytes()),
        "raw-fp16": request("FP16", [1, 2], pair.astype(np.float16).tobytes()),
        "raw-int64": request("INT64", [1, 2], np.array([[3, -4]], np.int64).tobytes()),
        "raw-bool": request("BOOL", [1, 2], bytes([1, 0])),
        "typed-fp32": request("FP32", [1, 2], None, fp32_contents=[1.5, -2.0]),
        "typed-int8": request("INT8", [1, 2], None, int_contents=[3, -4]),
        "typed-uint8": request("UINT8", [1, 2], None, uint_contents=[3, 250]),
        "typed-fp64": request("FP64", [2, 2], None, fp64_contents=[1, 2, 3, 4]),
        "empty": request("FP32", [0, 2], b""),
    }
    with_outputs = pb.ModelInferRequest.FromString(seeds["raw-fp32"])
    with_outputs.outputs.add(name="output")
    with_outputs.parameters["binary_data_output"].bool_param = True
    seeds["outputs"] = with_outputs.SerializeToString()
    for name, message in seeds.items():
        _put("grpc", name, b"\x00" + message)
    _put("grpc", "traced", b"\x0d" + seeds["raw-fp32"])
    # selector bit 4: the harness builds the message from these bytes (fuzz_grpc.structured):
    # flags, datatype index, dims (kind byte + value), version, then raw or typed contents
    shape_1x2 = bytes([2, 0, 1, 0, 2])
    raw = pair.tobytes()
    _put("grpc", "built-raw-fp32", b"\x10" + bytes([0, 0]) + shape_1x2 + bytes([0, len(raw)]) + raw)
    typed = struct.pack("<q", 3) + struct.pack("<q", -4)
    _put("grpc", "built-typed-int32", b"\x10" + bytes([16, 6]) + shape_1x2 + bytes([0, 2]) + typed)
    huge = (
        bytes([3, 0, 0, 3])  # three dims: 0, then 2^62 twice (kind 3: 8 bytes)
        + (2**62).to_bytes(8, "little")
        + bytes([3])
        + (2**62).to_bytes(8, "little")
    )
    _put("grpc", "built-zero-size-huge", b"\x10" + bytes([0, 0]) + huge + bytes([0, 0]))


TARGETS: dict[str, Callable[[], None]] = {
    "contracts": contracts,
    "artifact": artifact,
    "reader": reader,
    "config": config,
    "protocol": protocol,
    "kserve": kserve,
    "grpc": grpc,
}


if __name__ == "__main__":
    for target in sys.argv[1:] or list(TARGETS):
        TARGETS[target]()
        print(f"corpus/{target}: {len(list((HERE / 'corpus' / target).iterdir()))} files")
    assert hashlib and json
