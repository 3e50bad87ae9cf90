"""Fuzz the ``vigil serve`` configuration loader (TOML): ServeConfig.load, then everything a
loaded config is asked for before serving (ring geometry, policy, input contract, warm-up
input, fallback chain).

Input: the configuration file's bytes.

    python tests/fuzz/fuzz_config.py -max_total_time=600 tests/fuzz/corpus/config
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fuzzing import instrumenting, main, scratch_dir

with instrumenting(__name__):
    from vigil.errors import VigilError
    from vigil.service._config import ServeConfig

SCRATCH = scratch_dir()


def one_input(data: bytes) -> None:
    path = SCRATCH / "vigil.toml"
    path.write_bytes(data)
    try:
        config = ServeConfig.load(path)
        config.log.ring()
        config.to_policy().to_json()
        contract = config.input_contract()
        if config.model.input is not None:
            x = config.model.input.warmup_input()
            if x is not None and contract is not None:
                contract.check(x)  # the warm-up input must pass the declared contract
        config.fallback_chain()
    except VigilError:
        pass


if __name__ == "__main__":
    main(one_input)
