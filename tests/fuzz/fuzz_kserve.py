"""Fuzz the KServe v2 HTTP front (``vigil.service._kserve.KServeApp``) with whole requests: the
infer body (JSON, the binary-data extension), its headers and the path, through WSGI.

Input: one selector byte, then the bytes. Selector % 4 picks the path: 0 the infer path read
straight from the environ, 1 its versioned spelling, 2 a spelling only the router takes (the
routed path), 3 a path made of the bytes up to the first newline (then consumed). Selector bit
2: the next 2 bytes (little-endian) are ``Inference-Header-Content-Length``; bit 3: the next
line (to a newline) is ``traceparent`` and the line after it ``tracestate``; bit 4: the class
header of the rate limiter is the next line. The rest is the body.

The invariant of a front on the network: any request gets a status the protocol defines (200,
400, 404, 405, 413, 429 or 503) and, for an error, the protocol's body ``{"error": "DIA-xxxx
NAME: ..."}`` -- never a 500, a traceback or an answer the model did not give, and never the
front's catch-all refusal (a malformation its checks do not name). An answer (200)
is the supervisor's, given a CPU tensor no larger than the request's bytes could make.

    python tests/fuzz/fuzz_kserve.py -max_total_time=600 -dict=tests/fuzz/dicts/kserve.dict \\
        /tmp/fz/kserve tests/fuzz/corpus/kserve
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fuzzing import instrumenting, main

with instrumenting(__name__):
    import torch
    from _doubling import Doubling
    from werkzeug.test import Client as WsgiClient

    from vigil.service._kserve import _UNREADABLE, KServeApp

_STATUSES = {200, 400, 404, 405, 413, 429, 503}
_PATHS = ("/v2/models/m/infer", "/v2/models/m/versions/1/infer", "/v2/models/m/infer/")


_SUP = Doubling()
_CLIENT = WsgiClient(
    KServeApp(
        _SUP,
        model_name="m",
        readiness=lambda: True,
        input_shape=(-1, 2),
        input_dtype="float32",
        max_request_bytes=1 << 16,
        max_json_bytes=1 << 12,
    )
)


def _line(rest: bytes) -> tuple[str, bytes]:
    head, _, tail = rest.partition(b"\n")
    return head.decode("latin-1"), tail


def one_input(data: bytes) -> None:
    if not data:
        return
    selector, rest = data[0], data[1:]
    path = _PATHS[selector % 4] if selector % 4 < 3 else None
    if path is None:
        raw, rest = _line(rest)
        path = "/" + raw.lstrip("/")
    headers: dict[str, str] = {}
    if selector & 4 and len(rest) >= 2:
        headers["Inference-Header-Content-Length"] = str(int.from_bytes(rest[:2], "little"))
        rest = rest[2:]
    if selector & 8:
        headers["traceparent"], rest = _line(rest)
        headers["tracestate"], rest = _line(rest)
    if selector & 16:
        headers["x-vigil-class"], rest = _line(rest)
    headers = {k: v for k, v in headers.items() if "\r" not in v and "\n" not in v}
    _SUP.given.clear()
    r = _CLIENT.post(path, data=rest, headers=headers)
    assert r.status_code in _STATUSES, (r.status_code, r.get_data()[:200])
    body = r.get_data()
    if r.status_code != 200:
        doc = json.loads(body)
        assert isinstance(doc.get("error"), str) and doc["error"].startswith("DIA-"), doc
        assert _UNREADABLE not in doc["error"], doc  # the catch-all: a check is missing
        return
    assert len(_SUP.given) == 1, "an answer the model did not give"
    (x,) = _SUP.given
    # no amplification: every element came from the request's bytes (a JSON number or its
    # binary part), so a small request cannot make a large tensor
    assert isinstance(x, torch.Tensor) and x.device.type == "cpu"
    assert x.numel() * x.element_size() <= max(len(rest), 1) * 8, (x.shape, len(rest))


if __name__ == "__main__":
    main(one_input)
