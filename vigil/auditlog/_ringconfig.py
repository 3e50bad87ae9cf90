"""The geometry of a new log and its first bytes (the superblock area)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vigil.auditlog import _format as F
from vigil.errors import ConfigError, InvalidArgument
from vigil.schemas import _records as R

if TYPE_CHECKING:
    from vigil.auditlog._seal import Sealer


@dataclass(frozen=True)
class RingConfig:
    """Geometry of a new log. Validated on construction (:class:`~vigil.errors.ConfigError`).

    Attributes:
        size: total file size in bytes; rounded down to whole segments.
        segment_size: bytes per segment, a multiple of 4096 (8 KiB .. 1 GiB). Larger segments
            mean fewer header writes and slower open (one segment is scanned at open).
        frozen_quota: most segments that may be frozen at once; default a quarter.
    """

    size: int = 64 << 20
    segment_size: int = 1 << 20
    frozen_quota: int | None = None

    def __post_init__(self) -> None:
        if self.segment_size % F.PAGE or not 2 * F.PAGE <= self.segment_size <= 1 << 30:
            raise ConfigError(
                f"segment_size={self.segment_size}: must be a multiple of 4096 in [8 KiB, 1 GiB]"
            )
        if self.segment_count < 2:
            raise ConfigError(
                f"size={self.size}: room for {self.segment_count} segment(s) of "
                f"{self.segment_size} bytes; a ring needs at least 2"
            )
        if self.segment_count > 1 << 24:
            raise ConfigError(f"size={self.size}: more than 2^24 segments; use larger segments")
        if self.quota < 0 or self.quota > self.segment_count - 2:
            raise ConfigError(
                f"frozen_quota={self.frozen_quota}: must be in [0, {self.segment_count - 2}] "
                "so that two segments always stay writable"
            )

    @property
    def segment_count(self) -> int:
        return (self.size - R.SUPERBLOCK_AREA) // self.segment_size

    @property
    def file_size(self) -> int:
        """Bytes the log file occupies: the superblock area and whole segments."""
        return R.SUPERBLOCK_AREA + self.segment_count * self.segment_size

    @property
    def quota(self) -> int:
        return self.segment_count // 4 if self.frozen_quota is None else self.frozen_quota


def superblock_area(
    config: RingConfig,
    created_ns: int,
    log_id: bytes | None = None,
    sealer: Sealer | None = None,
) -> bytes:
    """The first 4096 bytes of a new log: two superblock copies (fresh random log id).

    A sealed log is format 1.1 (flags and key id set); an unsealed one stays 1.0, byte for
    byte, so that older readers keep reading it."""
    if log_id is not None and len(log_id) != 16:
        raise InvalidArgument(f"log_id must be 16 bytes, got {len(log_id)}")
    sb = F.encode_superblock(
        {
            "major": R.FORMAT_MAJOR,
            "minor": 1 if sealer else 0,
            "flags": sealer.superblock_flags if sealer else 0,
            "revision": 1,
            "log_id": log_id or uuid.uuid4().bytes,
            "created_ns": created_ns,
            "sector_size": R.SECTOR,
            "segment_size": config.segment_size,
            "segment_count": config.segment_count,
            "frozen_quota": config.quota,
            "segments_offset": R.SUPERBLOCK_AREA,
            "header_area": R.SEGMENT_HEADER_AREA,
            "crc_alg": R.CRC_ALG_CRC32C,
            "hash_alg": R.HASH_ALG_SHA256,
            "key_id": sealer.key_id if sealer else bytes(32),
        }
    )
    gap = bytes(R.SUPERBLOCK_SLOTS[1] - len(sb))
    area = sb + gap + sb
    return area + bytes(R.SUPERBLOCK_AREA - len(area))


def format_image(
    config: RingConfig, created_ns: int | None = None, log_id: bytes | None = None
) -> bytearray:
    """A complete, empty log as bytes (for emulated storage, golden files and tests)."""
    image = bytearray(config.file_size)
    image[: R.SUPERBLOCK_AREA] = superblock_area(config, created_ns or time.time_ns(), log_id)
    return image
