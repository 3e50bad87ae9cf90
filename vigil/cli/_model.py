"""``vigil model``: keys, signing and verification of model directories.

``keygen`` writes an ECDSA P-384 key pair; ``sign`` writes the manifest and signature over the
files of a directory; ``export-reference`` writes a reference model as a signed directory (the
decoder by default, or the small ``tiny-reference`` perceptron) that
:func:`vigil.testing._models.build_reference` builds again; ``verify`` exits 0 when a directory
verifies against a public key, 1 when it is refused (the diagnostic code is printed), 2 on a
usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vigil import _diagnostics as codes
from vigil import keys as _keys
from vigil._files import read_regular, read_small
from vigil.errors import ArtifactError, KeyFileError, ManifestInvalid, UsageError

EXIT_REFUSED = 1
EXPORT_MODELS = ("decoder", "tiny-reference")


def add_parser(sub: Any) -> None:
    """Add the ``model`` command and its actions to ``sub`` (the top-level subparsers)."""
    model = sub.add_parser("model", help="keys, signing and verification of model directories")
    actions = model.add_subparsers(
        dest="model_command", required=True, metavar="ACTION", parser_class=type(model)
    )

    keygen = actions.add_parser("keygen", help="write an ECDSA P-384 key pair (KEY, KEY.pub)")
    keygen.add_argument("--out", required=True, metavar="KEY", help="private key file (0600)")
    keygen.set_defaults(run=keygen_command)

    sign = actions.add_parser("sign", help="write manifest.json and manifest.sig over DIR")
    sign.add_argument("dir", metavar="DIR")
    sign.add_argument("--key", required=True, help="P-384 private key (from `model keygen`)")
    sign.add_argument("--name", help="model name (default: the existing manifest's)")
    sign.add_argument("--version", help="version string (default: the existing manifest's)")
    sign.add_argument(
        "--config", metavar="FILE", help="JSON object for the model builder (default: kept)"
    )
    sign.set_defaults(run=sign_command)

    export = actions.add_parser(
        "export-reference", help="write a reference model (the decoder) as a signed directory"
    )
    export.add_argument("dir", metavar="DIR")
    export.add_argument("--key", required=True, help="P-384 private key")
    export.add_argument(
        "--model",
        choices=EXPORT_MODELS,
        default="decoder",
        help="the validated decoder, or the small perceptron (default: %(default)s)",
    )
    export.add_argument(
        "--preset",
        choices=("tiny", "gpu"),  # vigil.model.PRESETS, without importing torch
        help="decoder size: DecoderConfig.tiny() or .gpu() (default: tiny; decoder only)",
    )
    export.add_argument("--seed", type=int, default=0, help="weights seed (default: %(default)s)")
    export.add_argument(
        "--hidden", type=int, help="hidden width (default: 128; tiny-reference only)"
    )
    export.add_argument("--version", default="1", help="version string (default: %(default)s)")
    export.set_defaults(run=export_command)

    verify = actions.add_parser(
        "verify", help="check DIR's signature and files; exit 0 valid, 1 refused"
    )
    verify.add_argument("dir", metavar="DIR")
    verify.add_argument("--pubkey", required=True, help="the trusted P-384 public key")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(run=verify_command)


def keygen_command(args: argparse.Namespace) -> int:
    private, public = Path(args.out), Path(args.out + ".pub")
    for path in (private, public):
        if path.exists():
            raise KeyFileError(
                f"{path} exists; refusing to overwrite a key",
                diagnostic=codes.KEY_EXISTS,
                path=str(path),
            )
    key = _keys.generate(_keys.KeyAlgorithm.ECDSA_P384)
    key.save(private)
    key.public.save(public)
    print(f"wrote {private} (0600) and {public}: ECDSA P-384, key id {key.key_id.hex()}")
    return 0


def sign_command(args: argparse.Namespace) -> int:
    from vigil.model import MANIFEST, sign_model_dir  # noqa: PLC0415 - torch only when needed
    from vigil.model._manifest import MAX_MANIFEST_BYTES, parse  # noqa: PLC0415

    if not os.path.isdir(args.dir):
        raise UsageError(f"{args.dir}: not a directory; give the model directory to sign")
    key = _keys.load_private(args.key, algorithm=_keys.KeyAlgorithm.ECDSA_P384)
    previous: dict[str, Any] = {}
    try:  # unverified defaults: the signer vouches anew for what it signs now
        data, _ = read_regular(
            str(Path(args.dir) / MANIFEST), "manifest", MAX_MANIFEST_BYTES + 1, follow=False
        )  # a pipe, a device or a link is refused (DIA-1010), never read
        m = parse(data)
        previous = {"name": m.name, "version": m.version, "config": m.config}
    except (OSError, ManifestInvalid):
        pass
    name = args.name if args.name is not None else previous.get("name")  # "" is refused
    version = args.version if args.version is not None else previous.get("version")
    if name is None or version is None:
        raise UsageError("give --name and --version (DIR has no readable manifest to keep)")
    config = _read_config(args.config) if args.config else previous.get("config", {})
    digest = sign_model_dir(args.dir, key, name=name, version=version, config=config)
    print(f"signed {args.dir}: {name} {version}, digest {digest.hex()}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    if not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed {args.seed}: must be in [0, 2**63)")
    if args.model == "decoder":
        if args.hidden is not None:
            raise UsageError("--hidden applies to --model tiny-reference only; use --preset")
        return _export_decoder(args)
    if args.preset is not None:
        raise UsageError("--preset applies to --model decoder only; use --hidden")
    return _export_tiny(args)


def _export_decoder(args: argparse.Namespace) -> int:
    from vigil.testing._models import save_reference_decoder  # noqa: PLC0415 - torch

    preset = args.preset or "tiny"
    key = _keys.load_private(args.key, algorithm=_keys.KeyAlgorithm.ECDSA_P384)
    digest, decoder_config = save_reference_decoder(
        args.dir, key, preset=preset, seed=args.seed, version=args.version
    )
    vocab = decoder_config.vocab_size
    print(
        f"exported decoder {args.version} (preset {preset}, seed {args.seed}) to {args.dir}, "
        f"digest {digest.hex()}"
    )
    print(f"vocab size {vocab}: token ids lie in [0, {vocab}); the service configuration needs")
    print(f'[model.input]\ndtype = "int64"\nshape = [-1, -1]\nmin = 0\nmax = {vocab - 1}')
    print("# known-answer probes, from the signed known_answer.safetensors:")
    print('[supervisor.known_answer]\nfile = "known_answer.safetensors"')
    print('# ... used by [supervisor.policy] probe_interval_ms and/or probe_mode = "known_answer"')
    return 0


def _export_tiny(args: argparse.Namespace) -> int:
    from vigil.model import TinyReference, save_model_dir  # noqa: PLC0415 - torch when needed

    hidden = 128 if args.hidden is None else args.hidden
    if not 1 <= hidden <= 65536:
        raise UsageError(f"--hidden {hidden}: must be in [1, 65536]")
    key = _keys.load_private(args.key, algorithm=_keys.KeyAlgorithm.ECDSA_P384)
    model = TinyReference(seed=args.seed, hidden=hidden)
    config = {"model": "tiny-reference", "seed": args.seed, "hidden": hidden}
    digest = save_model_dir(
        args.dir,
        model.state_dict(),
        name="tiny-reference",
        version=args.version,
        config=config,
        key=key,
    )
    print(f"exported tiny-reference {args.version} to {args.dir}, digest {digest.hex()}")
    return 0


def verify_command(args: argparse.Namespace) -> int:
    from vigil.model import load_state_dict, verify_model_dir  # noqa: PLC0415 - torch

    public = _keys.load_public(args.pubkey, algorithm=_keys.KeyAlgorithm.ECDSA_P384)
    try:
        artifact = verify_model_dir(args.dir, public)
        tensors = load_state_dict(artifact)
    except ArtifactError as exc:
        if args.json:
            print(json.dumps({"valid": False, "code": exc.code, "reason": exc.message}))
        print(f"vigil: REFUSED {exc}", file=sys.stderr)
        return EXIT_REFUSED
    files = {n: len(b) for n, b in sorted(artifact.files.items())}
    facts = {
        "valid": True,
        "dir": artifact.directory,
        "name": artifact.name,
        "version": artifact.version,
        "model_digest": artifact.digest.hex(),
        "key_id": artifact.key_id.hex(),
        "files": files,
        "tensors": len(tensors),
    }
    unsigned = _unsigned(args.dir, artifact.files)
    facts["unsigned"] = unsigned
    if args.json:
        print(json.dumps(facts, sort_keys=True))
        return 0
    print(f"{artifact.directory}: VALID {artifact.name} {artifact.version}")
    print(f"  model digest {facts['model_digest']}")
    print(f"  signed by    {facts['key_id']}")
    for fname, size in files.items():
        print(f"  {fname}: {size} bytes")
    print(f"  {len(tensors)} tensors")
    for name, kind in unsigned.items():
        print(
            f"  note: {name} ({kind}) is not signed: the loader never reads it, and nothing "
            "vouches for it"
        )
    return 0


def _unsigned(directory: str, signed: Mapping[str, bytes]) -> dict[str, str]:
    """The directory's entries the manifest does not sign (hidden names aside), and what
    each is: a VALID directory may hold them, and nothing vouches for their content."""
    from vigil.model import MANIFEST, SIGNATURE  # noqa: PLC0415

    out: dict[str, str] = {}
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return out
    for entry in entries:
        if entry.name.startswith(".") or entry.name in (MANIFEST, SIGNATURE, *signed):
            continue
        kind = (
            "symbolic link"
            if entry.is_symlink()
            else "directory"
            if entry.is_dir(follow_symlinks=False)
            else "file"
            if entry.is_file(follow_symlinks=False)
            else "special file"
        )
        out[entry.name] = kind
    return out


_MAX_CONFIG_BYTES = 1 << 20  # a model's configuration: a few hundred bytes in practice


def _read_config(path: str) -> dict[str, Any]:
    data = read_small(path, "configuration file", _MAX_CONFIG_BYTES)
    try:
        config = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"--config {path}: not a readable JSON file ({exc})") from None
    if not isinstance(config, dict):
        raise UsageError(f"--config {path}: must hold a JSON object")
    return config


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (the manifest's own rule)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out
