"""Fuzz the socket protocol's decoders: frame header, whole frame, tensor payload and the
RESULT, ERROR and HEALTH_REPLY bodies.

Input: one selector byte, then the bytes. Selector % 8: 0 a whole frame (``decode_frame``,
then its body by frame type), 1 a header (``parse_header``), 2 a tensor payload, 3 a RESULT
body, 4 an ERROR body, 5 a HEALTH_REPLY body; selector bit 7 (frames) rewrites the header's
CRC first, so that mutated bodies get past it. A decoded tensor payload must encode back to
the same bytes (the layout is canonical).

    python tests/fuzz/fuzz_protocol.py -max_total_time=600 tests/fuzz/corpus/protocol
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fuzzing import instrumenting, main

with instrumenting(__name__):
    import crc32c

    from vigil.errors import VigilError
    from vigil.service import _protocol as P

ALL = P.REQUESTS | P.RESPONSES
_FIX_CRC = 0x80
_LIMIT = 1 << 24  # the largest body the harness lets a header announce


def _tensors(body: memoryview | bytes, offset: int = 0) -> None:
    value = P.decode_tensors(body, offset)
    again = b"".join(bytes(b) for b in P.encode_tensors(value, offset=offset))
    assert again == bytes(memoryview(body)[offset:]), "a decoded payload encodes differently"


def _body(ftype: P.FrameType, body: memoryview | bytes) -> None:
    if ftype is P.FrameType.INFER:
        _tensors(body)
    elif ftype is P.FrameType.RESULT:
        P.decode_result(body)
    elif ftype is P.FrameType.ERROR:
        P.decode_error(body)
    elif ftype is P.FrameType.HEALTH_REPLY:
        P.decode_health(body)


def one_input(data: bytes) -> None:
    if not data:
        return
    selector, rest = data[0], bytearray(data[1:])
    try:
        which = selector % 8
        if which == 0:
            if selector & _FIX_CRC and len(rest) >= P.HEADER_SIZE:
                crc = crc32c.crc32c(bytes(rest[P.HEADER_SIZE :]), crc32c.crc32c(bytes(rest[:28])))
                rest[28:32] = crc.to_bytes(4, "little")
            frame = P.decode_frame(rest, max_body=_LIMIT, expect=ALL)
            _body(frame.type, frame.body)
        elif which == 1:
            P.parse_header(bytes(rest[: P.HEADER_SIZE]), max_body=_LIMIT, expect=ALL)
        elif which == 2:
            _tensors(bytes(rest))
        elif which == 3:
            P.decode_result(bytes(rest))
        elif which == 4:
            P.decode_error(bytes(rest))
        elif which == 5:
            P.decode_health(bytes(rest))
    except VigilError:
        pass


if __name__ == "__main__":
    main(one_input)
