"""The model manifest: its schema, its canonical bytes, and a strict parser.

A manifest is a small JSON object naming a model (name, version, an opaque ``config`` object
for the code that builds it), its signer (the key id) and every file of the model directory
with its SHA-256 and size. The signature covers the manifest's exact bytes, and the files are
bound to it by their digests, so one signature vouches for the whole directory. The parser is
written for hostile input: the size is capped before parsing, duplicate keys, unknown or
missing keys, wrong types and NaN are refused, and every file name must be a plain name inside
the directory (see ``docs/ARTIFACTS.md``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, NoReturn

from vigil import _diagnostics as codes
from vigil.errors import ManifestInvalid

FORMAT_VERSION = 1
"""The manifest format this code writes and reads (ECDSA P-384 / SHA-384 signatures)."""

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
WEIGHTS = "weights.safetensors"

MAX_MANIFEST_BYTES = 64 * 1024
"""A manifest larger than this is refused unparsed (DIA-5108)."""
MAX_FILES = 1024
MAX_FILE_SIZE = 1 << 40  # 1 TiB: larger claims are refused before any allocation
_MAX_TEXT = 128

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TOP_KEYS = frozenset({"format", "name", "version", "config", "key_id", "files"})
_FILE_KEYS = frozenset({"sha256", "size"})
_RESERVED = frozenset({MANIFEST, SIGNATURE})


@dataclass(frozen=True)
class FileEntry:
    """One signed file: its SHA-256 (32 bytes) and size in bytes."""

    sha256: bytes
    size: int


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest (see :func:`parse`)."""

    name: str
    version: str
    config: dict[str, Any]
    key_id: bytes
    files: dict[str, FileEntry]


def is_plain_name(name: str) -> bool:
    """True for a file name that may appear in a manifest: letters, digits, ``._-``, not
    hidden, no separator, at most 128 characters, not the manifest or its signature."""
    return bool(_NAME.fullmatch(name)) and name not in _RESERVED


def encode(
    *, name: str, version: str, config: dict[str, Any], key_id: bytes, files: dict[str, FileEntry]
) -> bytes:
    """The canonical manifest bytes (sorted keys, ASCII, one trailing newline).

    The result is parsed back with :func:`parse` before it is returned, so a manifest this
    code writes is always one it reads.

    Raises:
        ManifestInvalid: a field is not acceptable (DIA-5107), or a file name is not a plain
            name (DIA-5109).
    """
    document = {
        "format": FORMAT_VERSION,
        "name": name,
        "version": version,
        "config": config,
        "key_id": key_id.hex(),
        "files": {n: {"sha256": e.sha256.hex(), "size": e.size} for n, e in files.items()},
    }
    try:
        text = json.dumps(document, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        _invalid(f"config must be a JSON object of finite values: {exc}")
    data = text.encode("ascii") + b"\n"
    parse(data)
    return data


def parse(data: bytes) -> Manifest:
    """Parse and validate manifest bytes strictly.

    Raises:
        ManifestInvalid: DIA-5108 larger than :data:`MAX_MANIFEST_BYTES`; DIA-5109 a file
            name that is not a plain name; DIA-5107 anything else (the message names it).
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestInvalid(
            f"manifest is {len(data)} bytes, more than the limit of {MAX_MANIFEST_BYTES}",
            diagnostic=codes.ARTIFACT_MANIFEST_TOO_LARGE,
            size=len(data),
            limit=MAX_MANIFEST_BYTES,
        )
    doc = _load_json(data)
    if not isinstance(doc, dict):
        _invalid("the manifest must be a JSON object")
    _exact_keys(doc, _TOP_KEYS, "manifest")
    if type(doc["format"]) is not int or doc["format"] != FORMAT_VERSION:
        _invalid(f"format {doc['format']!r} is not supported; this vigil reads {FORMAT_VERSION}")
    name, version = _text(doc, "name"), _text(doc, "version")
    if not isinstance(doc["config"], dict):
        _invalid("config must be a JSON object")
    key_id = _hex32(doc["key_id"], "key_id")
    files = doc["files"]
    if not isinstance(files, dict) or not files:
        _invalid("files must be a non-empty JSON object")
    if len(files) > MAX_FILES:
        _invalid(f"files names {len(files)} files; at most {MAX_FILES}")
    entries: dict[str, FileEntry] = {}
    for fname, entry in files.items():
        if not is_plain_name(fname):
            raise ManifestInvalid(
                f"file name {fname!r} is not a plain name inside the model directory",
                diagnostic=codes.ARTIFACT_UNSAFE_PATH,
                file=fname,
            )
        if not isinstance(entry, dict):
            _invalid(f"files[{fname!r}] must be a JSON object")
        _exact_keys(entry, _FILE_KEYS, f"files[{fname!r}]")
        size = entry["size"]
        if type(size) is not int or not 0 <= size <= MAX_FILE_SIZE:
            _invalid(f"files[{fname!r}].size must be an integer in [0, {MAX_FILE_SIZE}]")
        entries[fname] = FileEntry(_hex32(entry["sha256"], f"files[{fname!r}].sha256"), size)
    if WEIGHTS not in entries:
        _invalid(f"files does not name {WEIGHTS}")
    return Manifest(name, version, doc["config"], key_id, entries)


def peek_key_id(data: bytes) -> bytes | None:
    """The key id an *unverified* manifest claims, or None when it names none readably.

    Used only to word a refusal (wrong key versus a bad signature); never trusted.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        return None
    try:
        doc = _load_json(data)
        return _hex32(doc["key_id"], "key_id") if isinstance(doc, dict) else None
    except (ManifestInvalid, KeyError):
        return None


def _load_json(data: bytes) -> Any:
    try:
        return json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=_finite,
        )
    except ManifestInvalid:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        _invalid(f"not valid JSON: {exc}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            _invalid(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> NoReturn:
    _invalid(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    """A JSON number as a float; one too large for a float (``1e999``) is refused as
    ``Infinity`` is (the signer writes finite values only)."""
    value = float(text)
    if not math.isfinite(value):
        _invalid(f"{text[:40]} is not a finite number")
    return value


def _exact_keys(obj: dict[str, Any], wanted: frozenset[str], where: str) -> None:
    missing, unknown = wanted - obj.keys(), obj.keys() - wanted
    if missing:
        _invalid(f"{where} lacks {', '.join(sorted(missing))}")
    if unknown:
        _invalid(f"{where} has unknown keys {', '.join(sorted(unknown))}")


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT or not value.isprintable():
        _invalid(f"{key} must be a printable string of 1 to {_MAX_TEXT} characters")
    return value


def _hex32(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        _invalid(f"{where} must be 64 lowercase hex digits")
    return bytes.fromhex(value)


def _invalid(message: str) -> NoReturn:
    raise ManifestInvalid(message)
