"""The registry of diagnostic codes.

Every error vigil raises and every finding its verifier reports carries one stable code
``DIA-xxxx``. Codes are never renumbered or reused; a retired code stays here, marked as such.
Ranges: 1xxx configuration and usage; 2xxx caller input (2100-2199 tensor contracts); 3xxx
the flight recorder (3000-3099 errors raised, 3100-3199 findings of ``vigil verify``,
3200-3299 findings of ``vigil replay``, 3300-3399 sealing findings); 4xxx the guarded
model (4000-4099 call outcomes, 4100-4199 state-machine transitions); 5xxx the reference
model (5000-5099 config and input validation, 5100-5199 signed model artifacts); 6xxx keys
and signatures (6000-6099 key files); 7xxx the supervisor service (7000-7099 worker
processes, 7100-7199 the socket protocol and its clients, 7200-7299 service configuration
and operations); 8xxx fleet export and reports (8000-8099: ``vigil export``, ``vigil fleet
report``, :mod:`vigil.fleet`). ``docs/DIAGNOSTICS.md`` documents each one; a test
keeps the two in step. Every ``Diagnostic`` defined here is registered.

This module imports nothing from vigil, so that ``vigil.errors`` can depend on it; the public
face of the registry is :mod:`vigil.schemas`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    """One registered diagnostic code.

    Attributes:
        code: the stable identifier, ``DIA-`` and four digits.
        name: an UPPER_CASE name for the condition.
        summary: what went wrong, in one line.
        action: what the operator or caller should do next.
    """

    code: str
    name: str
    summary: str
    action: str

    @property
    def number(self) -> int:
        """The numeric part of the code, as stored in binary records."""
        return int(self.code[4:])


def _d(code: str, name: str, summary: str, action: str) -> Diagnostic:
    return Diagnostic(code, name, summary, action)


CONFIG_INVALID = _d(
    "DIA-1001",
    "CONFIG_INVALID",
    "a configuration value is out of range or inconsistent",
    "fix the named setting; the message states the allowed range",
)
USAGE = _d(
    "DIA-1002",
    "USAGE",
    "a command was called with invalid arguments",
    "run the command with --help and correct the arguments",
)
NOT_A_REGULAR_FILE = _d(
    "DIA-1010",
    "NOT_A_REGULAR_FILE",
    "a path names a named pipe, directory, device or socket, not a regular file",
    "give the path of a regular file (a log, key, seed or anchor file); nothing was read",
)
INVALID_ARGUMENT = _d(
    "DIA-2047",
    "INVALID_ARGUMENT",
    "an argument or input violates its declared contract",
    "correct the value named in the message; the call had no other effect",
)
LOG_IO = _d(
    "DIA-3001",
    "LOG_IO",
    "the flight log file could not be opened, read, written or synced",
    "check the path, permissions and free space; the OS error is in the message",
)
LOG_LOCKED = _d(
    "DIA-3002",
    "LOG_LOCKED",
    "another writer already holds the flight log",
    "stop the other writer, or open the log read-only with LogReader",
)
NOT_A_LOG = _d(
    "DIA-3003",
    "NOT_A_LOG",
    "the file is not a vigil flight log (no superblock magic)",
    "check the path; create a new log with FlightRecorder.create",
)
LOG_VERSION = _d(
    "DIA-3004",
    "LOG_VERSION",
    "the flight log uses a format version this vigil cannot read",
    "read it with the vigil release that wrote it (see docs/FORMAT.md, versioning)",
)
LOG_GEOMETRY = _d(
    "DIA-3005",
    "LOG_GEOMETRY",
    "the file's size or geometry does not match its superblock (truncated or resized)",
    "do not write to it; verify it with `vigil verify` and keep it as evidence",
)
SUPERBLOCK_CORRUPT = _d(
    "DIA-3006",
    "SUPERBLOCK_CORRUPT",
    "both copies of the superblock fail their CRC",
    "the geometry cannot be trusted; keep the file as evidence and start a new log",
)
RECORD_TOO_LARGE = _d(
    "DIA-3010",
    "RECORD_TOO_LARGE",
    "a record does not fit the log's limits",
    "shorten the payload or text; limits are in the message and in docs/FORMAT.md",
)
LOG_CLOSED = _d(
    "DIA-3011",
    "LOG_CLOSED",
    "the flight recorder was used after close()",
    "open the log again with FlightRecorder.open",
)
FREEZE_QUOTA = _d(
    "DIA-3012",
    "FREEZE_QUOTA",
    "freezing these segments would exceed the frozen-segment quota",
    "unfreeze older incident windows first, or create the log with a larger quota",
)
SEAL_REQUIRED = _d(
    "DIA-3013",
    "SEAL_REQUIRED",
    "the log is sealed (signed or forward-secure checkpoints) but was opened without its sealer",
    "open it with the device's key and/or forward-secure state, as it was created",
)
SEAL_KEY_MISMATCH = _d(
    "DIA-3014",
    "SEAL_KEY_MISMATCH",
    "the sealer does not match the log (another key, another sealing chain, or an unsealed log)",
    "use the key and state the log was created with; to seal with new keys, create a new log",
)
LOG_CORRUPT = _d(
    "DIA-3020",
    "LOG_CORRUPT",
    "a record or header failed an integrity check while reading",
    "run `vigil verify` for the full report; the reader skips what it cannot trust",
)
LOG_STORAGE_SHRUNK = _d(
    "DIA-3040",
    "LOG_STORAGE_SHRUNK",
    "the log file is shorter than the writer's mapping: it was truncated under the writer",
    "the recorder takes no more records (a store past the end would kill the process with "
    "SIGBUS); find who truncates the log (e.g. logrotate copytruncate), restart on a new log",
)
LOG_SYNC_FAILED = _d(
    "DIA-3041",
    "LOG_SYNC_FAILED",
    "the storage failed to make records durable (an I/O error on sync)",
    "the recorder takes no more records (records since durable_seq may be lost); check the "
    "device, then restart: the log reopens and recovery says what survived",
)
LOG_FAILED = _d(
    "DIA-3042",
    "LOG_FAILED",
    "the recorder's storage failed earlier (DIA-3040/3041): it refuses every further record",
    "restart on healthy storage; the message names the first failure",
)
CLOCK_UNAVAILABLE = _d(
    "DIA-3060",
    "CLOCK_UNAVAILABLE",
    "the configured clock source (CLOCK_TAI or a PTP device) cannot be opened or read",
    "check the device path (`ls /dev/ptp*`), its permissions, and that ptp4l runs; or use realtime",
)
TORN_TAIL = _d(
    "DIA-3101",
    "TORN_TAIL",
    "incomplete bytes after the last whole record: a crash interrupted a write (expected)",
    "nothing; the torn bytes were never acknowledged and are never returned as records",
)
MEDIA_CORRUPTION = _d(
    "DIA-3102",
    "MEDIA_CORRUPTION",
    "stored bytes changed after they were written (CRC mismatch)",
    "suspect the storage medium; keep the file as evidence and check the device",
)
TAMPERING = _d(
    "DIA-3103",
    "TAMPERING",
    "well-formed bytes that break the hash chain, the order or the identity of the log",
    "treat the log as edited; secure the device and compare with an external anchor",
)
GAP = _d(
    "DIA-3104",
    "GAP",
    "records are missing inside the range the log guarantees to retain",
    "treat as data loss or deletion; see the neighbouring findings for the cause",
)
EVICTED = _d(
    "DIA-3105",
    "EVICTED",
    "old records were overwritten by normal ring wrap-around (expected)",
    "nothing; enlarge the ring or freeze incident windows to keep more history",
)
CLOCK = _d(
    "DIA-3106",
    "CLOCK",
    "monotonic time ran backwards within one boot session",
    "treat as a writer fault or an edited log; compare with the neighbouring findings",
)
SUPERSEDED = _d(
    "DIA-3107",
    "SUPERSEDED",
    "records after a tear were not part of the log: recovery resumed in a later segment",
    "nothing for a crash; if no crash happened, investigate the storage medium",
)
HEADER_COPY = _d(
    "DIA-3108",
    "HEADER_COPY",
    "one copy of a redundant segment header is torn or damaged; the other copy is in force",
    "nothing after a crash; repeated findings suggest failing storage",
)
DIGEST_PENDING = _d(
    "DIA-3110",
    "DIGEST_PENDING",
    "output digests still queued when a writer session ended (a crash): at most the "
    "supervisor's declared digest queue bound, at the end of the session (expected)",
    "nothing after a crash; those calls' records exist, only their output digests were lost",
)
DIGEST_MISSING = _d(
    "DIA-3111",
    "DIGEST_MISSING",
    "a DIGEST_FOLLOWS INFERENCE record has no OUTPUT_DIGEST record where a crash cannot "
    "explain it (more than the queue bound, or before a later digest of the same session)",
    "treat as an edited log or a writer fault: the served output of that call is unproven",
)
DIGEST_UNEXPECTED = _d(
    "DIA-3112",
    "DIGEST_UNEXPECTED",
    "an OUTPUT_DIGEST record names a seq that is not a DIGEST_FOLLOWS INFERENCE record of its "
    "session, or names one a second time",
    "treat as an edited or spliced log; the findings name the records",
)
CLOCK_STEP = _d(
    "DIA-3120",
    "CLOCK_STEP",
    "the session's wall clock stepped against its monotonic clock between two records",
    "nothing if the clock was being set; otherwise check the time service (ptp4l, chrony)",
)

# --- caller input examined before routing (2010-2019) -----------------------------------
INPUT_UNREADABLE = _d(
    "DIA-2010",
    "INPUT_UNREADABLE",
    "the supervisor could not examine the input: its checks or its digest raised",
    "send a tensor or a structure of tensors; the exception's type is in the message",
)
REQUEST_ID_INVALID = _d(
    "DIA-2011",
    "REQUEST_ID_INVALID",
    "the request id given to a call is not 16 bytes",
    "pass 16 bytes (a UUID's bytes or a W3C trace id), or none for a generated one",
)
TRACE_CONTEXT_INVALID = _d(
    "DIA-2012",
    "TRACE_CONTEXT_INVALID",
    "the trace context given to a call is invalid: a trace id that is not 16 bytes or is all "
    "zero, or a span id that is not 8 bytes, is all zero or comes without a trace id",
    "pass a W3C trace-id (16 bytes, not all zero) and parent-id (8 bytes), or neither",
)

# --- trace context and rate limiting of a call (2020-2029) -----------------------------
TRACEPARENT_INVALID = _d(
    "DIA-2020",
    "TRACEPARENT_INVALID",
    "a W3C traceparent is malformed (length, version ff, upper-case or non-hex digits, an "
    "all-zero trace-id or parent-id)",
    "the service ignores it and starts a new trace (W3C rule); Client.infer refuses it: send "
    "00-<32 hex>-<16 hex>-<2 hex>, lower case",
)
RATE_LIMITED = _d(
    "DIA-2021",
    "RATE_LIMITED",
    "the call was refused by the service's rate limiter: its class ([limits]) has no token left",
    "retry after the Retry-After seconds (HTTP 429) or later (socket: busy); nothing ran; "
    "the refusal is a REJECTED record, never a model failure",
)

# --- contracts on tensors (2100-2199) --------------------------------------------------
SHAPE_MISMATCH = _d(
    "DIA-2101",
    "SHAPE_MISMATCH",
    "a tensor's shape does not match its contract",
    "send a tensor of the declared shape; the message gives both shapes",
)
DTYPE_MISMATCH = _d(
    "DIA-2102",
    "DTYPE_MISMATCH",
    "a tensor's dtype does not match its contract",
    "convert the tensor to the declared dtype before the call",
)
DEVICE_MISMATCH = _d(
    "DIA-2103",
    "DEVICE_MISMATCH",
    "a tensor is on another device than its contract declares",
    "move the tensor to the declared device before the call",
)
OUT_OF_RANGE = _d(
    "DIA-2104",
    "OUT_OF_RANGE",
    "tensor values lie outside the contract's range",
    "check the producer of the values; the message gives the range and the extremes found",
)
NOT_FINITE = _d(
    "DIA-2105",
    "NOT_FINITE",
    "a tensor holds NaN or infinite values where its contract forbids",
    "find where the NaN/Inf comes from upstream; it was not passed on",
)
CONTRACT_VIOLATED = _d(
    "DIA-2106",
    "CONTRACT_VIOLATED",
    "values break a semantic rule of their contract",
    "the message names the rule (e.g. boxes outside the image, timestamps not increasing)",
)
# --- vigil replay (3200-3299) -----------------------------------------------------------
SEAL_INVALID = _d(
    "DIA-3301",
    "SEAL_INVALID",
    "a checkpoint's signature or forward-secure tag does not verify, or it lacks one",
    "treat the records it covers as forged; compare with an anchor or another copy",
)
SEAL_MISMATCH = _d(
    "DIA-3302",
    "SEAL_MISMATCH",
    "a checkpoint does not describe the records before it (moved, replayed or rewritten)",
    "treat the records before it as rewritten; the message names the digests that differ",
)
WRONG_KEY = _d(
    "DIA-3303",
    "WRONG_KEY",
    "the log or a checkpoint is sealed by another key or forward-secure chain than the one given",
    "check that the key belongs to the device; a log from another device proves nothing here",
)
EPOCH_GAP = _d(
    "DIA-3304",
    "EPOCH_GAP",
    "checkpoint epochs are not consecutive: a sealed stretch was dropped or repeated",
    "treat records around the gap as tampered with; compare with an anchor",
)
UNSEALED = _d(
    "DIA-3305",
    "UNSEALED",
    "records that should be under a checkpoint are not (a cut-off close, beyond the interval)",
    "treat them as unauthenticated additions; the log may have been truncated and extended",
)
UNSEALED_TAIL = _d(
    "DIA-3306",
    "UNSEALED_TAIL",
    "the newest records are not under a checkpoint yet (a live log or a crash)",
    "nothing; they are unauthenticated until the next checkpoint, which the writer adds",
)
ANCHOR = _d(
    "DIA-3307",
    "ANCHOR",
    "the log does not reach or hold the anchored checkpoint (truncated, rolled back, forked)",
    "the log was cut off or replaced by an older copy; investigate the device",
)
ANCHOR_EVICTED = _d(
    "DIA-3308",
    "ANCHOR_EVICTED",
    "the anchored checkpoint was overwritten by the ring; the log continues past it",
    "nothing; take anchors more often than the ring wraps to compare content",
)
REPLAY_DISAGREES = _d(
    "DIA-3201",
    "REPLAY_DISAGREES",
    "a recorded transition is not what the recorded policy derives from the recorded calls",
    "treat as a supervisor fault or an edited log; the report names both transitions",
)
REPLAY_INCOMPLETE = _d(
    "DIA-3202",
    "REPLAY_INCOMPLETE",
    "the log lacks what replay needs (the policy record, or history the ring evicted)",
    "replay covers what the ring still holds; the report says from which record",
)
REPLAY_UNDECODABLE = _d(
    "DIA-3210",
    "REPLAY_UNDECODABLE",
    "a sealed record that replay reads has a body that does not decode (length, UTF-8, version)",
    "run vigil verify --pubkey to learn who wrote it; replay skips that session from there on",
)
REPLAY_UNREADABLE = _d(
    "DIA-3211",
    "REPLAY_UNREADABLE",
    "a policy, restore or call record decodes but holds nothing the state machine can use",
    "treat the session as unchecked (a writer fault or a forged record); replay skips its rest",
)
REPLAY_NOTHING_CHECKED = _d(
    "DIA-3212",
    "REPLAY_NOTHING_CHECKED",
    "replay checked nothing: no readable session, or no counted call and no transition",
    "the verdict is INCONCLUSIVE, not AGREES; keep the policy records in the ring",
)
# --- outcomes of guarded calls (4000-4099) ----------------------------------------------
MODEL_ERROR = _d(
    "DIA-4001",
    "MODEL_ERROR",
    "the primary model raised an exception",
    "the fallback answered; the exception type and message are in the reason",
)
DEADLINE_MISSED = _d(
    "DIA-4002",
    "DEADLINE_MISSED",
    "the primary did not answer within the call's deadline",
    "the fallback answered at the deadline; the primary is marked hung until it returns",
)
SLOW_CALL = _d(
    "DIA-4003",
    "SLOW_CALL",
    "the primary answered within its deadline but slower than the policy's slow threshold",
    "the answer was served; slow calls count towards the slow-call rate",
)
INVALID_OUTPUT = _d(
    "DIA-4004",
    "INVALID_OUTPUT",
    "the primary's output broke its contract (NaN/Inf, shape, dtype, range or a rule)",
    "the fallback answered; treat as a model fault",
)
OUT_OF_MEMORY = _d(
    "DIA-4005",
    "OUT_OF_MEMORY",
    "the primary ran out of device memory",
    "the fallback answered; it counts as a failure; reduce batch size or free memory",
)
DEVICE_FATAL = _d(
    "DIA-4006",
    "DEVICE_FATAL",
    "a process-fatal device error (a CUDA device-side assert): the device context is poisoned",
    "the primary is not called again in this process; restart it in a fresh process",
)
WORKER_LOST = _d(
    "DIA-4007",
    "WORKER_LOST",
    "the process running the primary died",
    "the fallback answered; with process isolation the worker is replaced",
)
PRIMARY_BUSY = _d(
    "DIA-4008",
    "PRIMARY_BUSY",
    "the primary is still running a call that missed its deadline",
    "the fallback answers until the hung call returns",
)
UNAVAILABLE = _d(
    "DIA-4009",
    "UNAVAILABLE",
    "no trustworthy answer exists for this call",
    "handle the absence of an answer (the message says why); nothing was guessed",
)
WRONG_ANSWER = _d(
    "DIA-4010",
    "WRONG_ANSWER",
    "a known-answer probe returned another answer than expected",
    "the model answers, but wrongly: treated as a model fault",
)
FALLBACK_FAILED = _d(
    "DIA-4011",
    "FALLBACK_FAILED",
    "a fallback could not answer (it raised, its answer was too "
    "old, or its output broke the contract)",
    "the next fallback in the chain was tried; see the reason",
)
LOG_UNWRITABLE = _d(
    "DIA-4012",
    "LOG_UNWRITABLE",
    "the flight recorder cannot write: no answer may be released unrecorded, so the "
    "supervisor serves no more calls",
    "fail over to another unit; restart the supervisor on healthy storage",
)
# --- state-machine transitions (4100-4199) ----------------------------------------------
TRIP_CONSECUTIVE = _d(
    "DIA-4101",
    "TRIP_CONSECUTIVE",
    "consecutive failures reached the policy's threshold",
    "the fallback answers while the primary cools down",
)
TRIP_FAILURE_RATE = _d(
    "DIA-4102",
    "TRIP_FAILURE_RATE",
    "the failure rate over the sliding window reached the policy's threshold",
    "the fallback answers while the primary cools down",
)
TRIP_SLOW_RATE = _d(
    "DIA-4103",
    "TRIP_SLOW_RATE",
    "the slow-call rate over the sliding window reached the policy's threshold",
    "the fallback answers while the primary cools down",
)
TRIP_FATAL = _d(
    "DIA-4104",
    "TRIP_FATAL",
    "a fatal outcome (worker lost, process-fatal device error)",
    "the fallback answers; a process-fatal primary is not probed again in this process",
)
COOLDOWN_ELAPSED = _d(
    "DIA-4105",
    "COOLDOWN_ELAPSED",
    "the cooldown in DEGRADED elapsed: recovery probes begin",
    "nothing; the probes are audited",
)
RECOVERED = _d(
    "DIA-4106",
    "RECOVERED",
    "enough consecutive good probes: the primary answers again",
    "nothing",
)
PROBE_FAILED = _d(
    "DIA-4107",
    "PROBE_FAILED",
    "a recovery probe failed: back to DEGRADED, longer cooldown",
    "nothing; repeated failures end in SAFE_STOP",
)
RECOVERY_TIMEOUT = _d(
    "DIA-4108",
    "RECOVERY_TIMEOUT",
    "recovery did not complete within the policy's limit",
    "nothing; it counts as a failed recovery",
)
RESTART_INTENSITY = _d(
    "DIA-4109",
    "RESTART_INTENSITY",
    "more failed recoveries than the policy allows within its period: terminal SAFE_STOP",
    "an operator must find the cause and reset the supervisor",
)
OPERATOR_RESET = _d(
    "DIA-4110",
    "OPERATOR_RESET",
    "an operator reset the state machine",
    "nothing; the reset is audited",
)
TRIP_KNOWN_ANSWER = _d(
    "DIA-4111",
    "TRIP_KNOWN_ANSWER",
    "a known-answer probe failed in NORMAL: the model answers, but not correctly",
    "the fallback answers at once; find why the model's answer changed (weights, device, "
    "numerics) before it recovers",
)

# --- signed model artifacts and hot reload (5100-5199) ----------------------------------
ARTIFACT_UNSIGNED = _d(
    "DIA-5101",
    "ARTIFACT_UNSIGNED",
    "the model directory has no signature (manifest.sig)",
    "sign it with `vigil model sign DIR --key KEY`; unsigned models are never loaded",
)
ARTIFACT_SIGNATURE_INVALID = _d(
    "DIA-5102",
    "ARTIFACT_SIGNATURE_INVALID",
    "the manifest's signature does not verify: the manifest or the signature was changed",
    "treat the artifact as tampered; obtain it again from its publisher",
)
ARTIFACT_WRONG_KEY = _d(
    "DIA-5103",
    "ARTIFACT_WRONG_KEY",
    "the manifest names another signing key than the public key the loader trusts",
    "check which key signed it (`vigil model verify`); pass the right public key or re-sign",
)
ARTIFACT_SIGNATURE_MALFORMED = _d(
    "DIA-5104",
    "ARTIFACT_SIGNATURE_MALFORMED",
    "manifest.sig is not a P-384 signature (wrong length: truncated or padded)",
    "the signature file was damaged or replaced; obtain the artifact again or re-sign it",
)
ARTIFACT_FILE_MISSING = _d(
    "DIA-5105",
    "ARTIFACT_FILE_MISSING",
    "a file the manifest names (or the manifest itself) is not in the model directory",
    "copy the whole directory; the message names the missing file",
)
ARTIFACT_TAMPERED = _d(
    "DIA-5106",
    "ARTIFACT_TAMPERED",
    "a file's size or SHA-256 differs from what the signed manifest states",
    "treat the artifact as tampered or damaged; obtain it again from its publisher",
)
ARTIFACT_MANIFEST_INVALID = _d(
    "DIA-5107",
    "ARTIFACT_MANIFEST_INVALID",
    "manifest.json is not a valid manifest (JSON, keys, types or format version)",
    "re-create it with `vigil model sign`; the message names the offending field",
)
ARTIFACT_MANIFEST_TOO_LARGE = _d(
    "DIA-5108",
    "ARTIFACT_MANIFEST_TOO_LARGE",
    "manifest.json (or manifest.sig) exceeds its size limit; it was not parsed",
    "a real manifest is a few KiB; treat an oversize one as hostile",
)
ARTIFACT_UNSAFE_PATH = _d(
    "DIA-5109",
    "ARTIFACT_UNSAFE_PATH",
    "a manifest entry is not a plain file name inside the directory "
    "(.., /, a hidden name, a symlink or not a regular file)",
    "keep every artifact file as a regular file directly in the model directory",
)
ARTIFACT_IO = _d(
    "DIA-5110",
    "ARTIFACT_IO",
    "a model artifact file could not be read or written",
    "check the path and permissions; the operating-system error is in the message",
)
ARTIFACT_WEIGHTS_INVALID = _d(
    "DIA-5111",
    "ARTIFACT_WEIGHTS_INVALID",
    "weights.safetensors is not a valid safetensors file",
    "re-export the weights with safetensors; the parser's message is in the reason",
)
ARTIFACT_WEIGHTS_MISMATCH = _d(
    "DIA-5112",
    "ARTIFACT_WEIGHTS_MISMATCH",
    "the weights do not fit the model built from the manifest's config "
    "(missing, unexpected or mis-shaped tensors)",
    "check that the artifact and the config belong together; the message lists the keys",
)
ARTIFACT_BUILD_FAILED = _d(
    "DIA-5113",
    "ARTIFACT_BUILD_FAILED",
    "building the model from the manifest's config raised",
    "the config does not describe a model this build function accepts; see the reason",
)
RELOAD_WARMUP_FAILED = _d(
    "DIA-5120",
    "RELOAD_WARMUP_FAILED",
    "a candidate model raised or produced NaN/Inf during its warm-up calls",
    "the old model keeps serving; fix the new version before publishing it again",
)
RELOAD_PROBE_FAILED = _d(
    "DIA-5121",
    "RELOAD_PROBE_FAILED",
    "a candidate model failed its known-answer probe or the caller's check",
    "the old model keeps serving; the candidate answers, but wrongly",
)

KEY_FILE = _d(
    "DIA-6001",
    "KEY_FILE",
    "a key file could not be read, written or parsed",
    "check the path and that the file is a PEM key written by `vigil keygen`",
)
KEY_PERMISSIONS = _d(
    "DIA-6002",
    "KEY_PERMISSIONS",
    "a private key file is readable or writable by other users",
    "restrict it with `chmod 600 FILE`; a key others could read must be treated as leaked",
)
KEY_EXISTS = _d(
    "DIA-6003",
    "KEY_EXISTS",
    "refusing to overwrite an existing key file",
    "choose another path, or remove the old key deliberately first",
)
KEY_ALGORITHM = _d(
    "DIA-6004",
    "KEY_ALGORITHM",
    "the key's algorithm is not the one this use requires",
    "use a key of the algorithm named in the message (`vigil keygen --algorithm`)",
)

# --- the reference model: configuration and boundary validation (5000-5099) -------------
MODEL_CONFIG_INVALID = _d(
    "DIA-5001",
    "MODEL_CONFIG_INVALID",
    "a DecoderConfig field is out of range or inconsistent with another field",
    "fix the named field; the message states the allowed range",
)
MODEL_CONFIG_SCHEMA = _d(
    "DIA-5002",
    "MODEL_CONFIG_SCHEMA",
    "a serialised DecoderConfig has unknown or missing keys, or a value of the wrong type",
    "write the config with DecoderConfig.to_dict(); the message lists the offending keys",
)
TOKEN_IDS_DTYPE = _d(
    "DIA-5010",
    "TOKEN_IDS_DTYPE",
    "input_ids is not an int64 or int32 tensor",
    "pass token ids as a torch.long (or torch.int32) tensor",
)
TOKEN_IDS_SHAPE = _d(
    "DIA-5011",
    "TOKEN_IDS_SHAPE",
    "input_ids is not a non-empty (batch, sequence) tensor",
    "pass a 2-D tensor with at least one row and one token; add the batch dim with [None]",
)
TOKEN_ID_OUT_OF_RANGE = _d(
    "DIA-5012",
    "TOKEN_ID_OUT_OF_RANGE",
    "a token id lies outside [0, vocab_size)",
    "check the tokenizer matches the model's vocabulary; the message gives the extremes",
)
POSITIONS_SHAPE = _d(
    "DIA-5013",
    "POSITIONS_SHAPE",
    "positions is not an int64/int32 tensor of the same shape as input_ids",
    "pass one position per token, shaped like input_ids, or leave positions out",
)
POSITION_OUT_OF_RANGE = _d(
    "DIA-5014",
    "POSITION_OUT_OF_RANGE",
    "a position lies outside [0, max_positions)",
    "shorten the sequence or use a config with a larger max_positions",
)
MASK_SHAPE = _d(
    "DIA-5015",
    "MASK_SHAPE",
    "attention_mask is not a (batch, cached + new tokens) tensor",
    "pass one entry per key (the cached tokens and the new ones), 1/True = attend",
)
MASK_DTYPE = _d(
    "DIA-5016",
    "MASK_DTYPE",
    "attention_mask is not a bool or integer tensor",
    "pass a bool or 0/1 integer padding mask; additive float masks are not accepted",
)
INPUT_DEVICE = _d(
    "DIA-5017",
    "INPUT_DEVICE",
    "an input tensor is not on the model's device",
    "move input_ids, positions and attention_mask to the model's device",
)
KV_CACHE_OVERFLOW = _d(
    "DIA-5020",
    "KV_CACHE_OVERFLOW",
    "the new tokens do not fit in the KV cache's remaining capacity",
    "nothing was written; reset() the cache, or use a config with a larger kv_cache_capacity",
)
KV_CACHE_BATCH = _d(
    "DIA-5021",
    "KV_CACHE_BATCH",
    "the batch size of input_ids differs from the batch size the KV cache was built for",
    "build one cache per batch size with Decoder.new_cache(batch_size)",
)
KV_CACHE_INCOMPATIBLE = _d(
    "DIA-5022",
    "KV_CACHE_INCOMPATIBLE",
    "the KV cache was built for another geometry, dtype or device than this model",
    "build the cache with this model's Decoder.new_cache()",
)
TOKEN_OUTPUT_LOGITS = _d(
    "DIA-5030",
    "TOKEN_OUTPUT_LOGITS",
    "token output needs (batch, tokens, vocab) floating logits; the model returned another form",
    'serve this model with output = "logits", or make it return decoder logits',
)

# --- worker processes (7000-7099) ------------------------------------------------------
WORKER_FAILED = _d(
    "DIA-7001",
    "WORKER_FAILED",
    "a model worker process could not be started, loaded or reached",
    "the message says which worker and why; the supervisor keeps serving with what it has",
)
WORKER_START_FAILED = _d(
    "DIA-7002",
    "WORKER_START_FAILED",
    "a worker process could not build, load or warm up its model in time",
    "read the START_FAILED lifecycle record's reason; fix the model spec or raise the timeout",
)
WORKER_HEARTBEAT = _d(
    "DIA-7003",
    "WORKER_HEARTBEAT",
    "a worker's heartbeat stopped (the process is frozen or starved): it was replaced",
    "nothing for the caller; repeated losses point at the host (memory, CPU, a stuck driver)",
)
NO_WORKER = _d(
    "DIA-7004",
    "NO_WORKER",
    "no worker process was ready to take the call (both lost, a new one still starting)",
    "the fallback answered; a replacement is starting (seconds); see the LOST records",
)
WORKER_SHM_TOO_SMALL = _d(
    "DIA-7005",
    "WORKER_SHM_TOO_SMALL",
    "the tensors do not fit the worker's shared-memory area",
    "send smaller inputs, or raise the workers' shm size ([workers].shm_mb)",
)
WORKER_DIGEST_MISMATCH = _d(
    "DIA-7006",
    "WORKER_DIGEST_MISMATCH",
    "a new worker loaded another model than the one the pool runs: it was not installed",
    "the model files changed under the service; reload through the signed-artifact path",
)
WORKER_UNSUPPORTED_IO = _d(
    "DIA-7007",
    "WORKER_UNSUPPORTED_IO",
    "a worker exchanges tensors only: a tensor, a dict of str to tensors, or a tuple of them",
    "pass CPU tensors of a supported dtype; the supervisor moves nothing to the device itself",
)
WORKER_OVERLOADED = _d(
    "DIA-7010",
    "WORKER_OVERLOADED",
    "overload: no worker came free within the call's deadline, or the queue was full",
    "the fallback answered (not held against the model); add [workers].active or capacity",
)
NO_WORKER_LEFT = _d(
    "DIA-7011",
    "NO_WORKER_LEFT",
    "every model worker was lost: none is ready to serve (a replacement may be starting)",
    "the fallback answers; the primary is probed again once a fresh worker is ready",
)

# --- the socket protocol and its clients (7100-7199) ------------------------------------
PROTOCOL_ERROR = _d(
    "DIA-7101",
    "PROTOCOL_ERROR",
    "a frame on the service socket broke the protocol",
    "the message says which field; fix the client (docs/PROTOCOL.md); the service serves on",
)
PROTOCOL_VERSION = _d(
    "DIA-7102",
    "PROTOCOL_VERSION",
    "a frame announced a protocol version this side does not speak",
    "the message names both versions; use a client of the service's protocol version",
)
BAD_MAGIC = _d(
    "DIA-7103",
    "BAD_MAGIC",
    "a frame did not start with the protocol's magic: the peer is not a vigil client",
    "check the socket path and the client; the connection was closed",
)
FRAME_CRC = _d(
    "DIA-7104",
    "FRAME_CRC",
    "a frame's CRC32C does not match its header and body",
    "suspect a buggy client or corrupted memory; the connection was closed",
)
FRAME_TOO_LARGE = _d(
    "DIA-7105",
    "FRAME_TOO_LARGE",
    "a frame's body length exceeds the receiver's limit",
    "send smaller tensors or raise max_request_bytes; the body was not read",
)
FRAME_TYPE = _d(
    "DIA-7106",
    "FRAME_TYPE",
    "a frame type unknown or not accepted here, or reserved flags set",
    "fix the client (docs/PROTOCOL.md lists the types); the connection was closed",
)
FRAME_TRUNCATED = _d(
    "DIA-7107",
    "FRAME_TRUNCATED",
    "the stream ended, or a read timed out, in the middle of a frame",
    "nothing on the service side; the peer went away or stalled mid-frame",
)
TENSOR_SPEC = _d(
    "DIA-7108",
    "TENSOR_SPEC",
    "a tensor payload is malformed (unknown dtype, rank over 8, shape and bytes disagree)",
    "fix the client's encoding; the message names the tensor; the connection stays usable",
)
BODY_MALFORMED = _d(
    "DIA-7109",
    "BODY_MALFORMED",
    "a frame body is malformed (truncated fields, bad UTF-8 or JSON, trailing bytes)",
    "fix the peer's encoding (docs/PROTOCOL.md)",
)
OUTPUT_NOT_ENCODABLE = _d(
    "DIA-7110",
    "OUTPUT_NOT_ENCODABLE",
    "the model's answer holds something other than supported tensors",
    "make the model return a tensor, a dict of tensors or a tuple of tensors",
)
SERVICE_BUSY = _d(
    "DIA-7111",
    "SERVICE_BUSY",
    "the service refused the connection or request: every slot busy, or shutting down",
    "retry later or on another instance; nothing was done",
)
SERVICE_UNREACHABLE = _d(
    "DIA-7112",
    "SERVICE_UNREACHABLE",
    "the service socket could not be reached, or the connection was lost or timed out",
    "check that `vigil serve` runs; a call cut off mid-way may have been recorded",
)
READ_TIMEOUT = _d(
    "DIA-7113",
    "READ_TIMEOUT",
    "a client sent nothing (or not a whole frame) within the read timeout",
    "nothing; the service dropped the connection; clients reconnect",
)
SERVER_FAULT = _d(
    "DIA-7114",
    "SERVER_FAULT",
    "an unexpected failure inside the service while handling a request",
    "see the message and the flight log; the service serves on",
)
BUFFER_BUDGET = _d(
    "DIA-7120",
    "BUFFER_BUDGET",
    "the service already holds max_buffered_bytes of request bodies: this request was refused",
    "retry later (nothing was done; the connection was closed), or raise max_buffered_bytes",
)
SLOW_BODY = _d(
    "DIA-7121",
    "SLOW_BODY",
    "a request body arrived too slowly or stalled while every connection or the request "
    "memory was taken: closed to make room",
    "nothing was done; send each frame at once (the Python client does) and retry",
)

# --- the KServe v2 HTTP endpoint (7140-7159) -------------------------------------------
HTTP_REQUEST_INVALID = _d(
    "DIA-7140",
    "HTTP_REQUEST_INVALID",
    "a KServe v2 HTTP request is not valid JSON or not an inference request of the v2 form",
    "send the v2 inference request form (docs/SERVICE.md, KServe v2); nothing was done",
)
HTTP_REQUEST_TOO_LARGE = _d(
    "DIA-7141",
    "HTTP_REQUEST_TOO_LARGE",
    "a KServe v2 HTTP request body, or its JSON part, is larger than [http] allows",
    "send the tensors as binary data, or raise [http] max_request_mb / max_json_mb",
)
HTTP_TENSOR_INVALID = _d(
    "DIA-7142",
    "HTTP_TENSOR_INVALID",
    "a KServe v2 tensor is malformed: unknown datatype or name, bad shape, or data that does "
    "not match its shape and datatype",
    "the message names the tensor and the rule; fix the request; nothing was done",
)
HTTP_UNKNOWN_MODEL = _d(
    "DIA-7143",
    "HTTP_UNKNOWN_MODEL",
    "a KServe v2 request names a model or version this service does not serve",
    "use [http] model_name (GET /v2/models/<name> lists it) and version 1 or none",
)
HTTP_DRAINING = _d(
    "DIA-7144",
    "HTTP_DRAINING",
    "the service is shutting down and takes no new KServe v2 requests",
    "retry on another instance, or once the service is back",
)
HTTP_OUTPUT_UNSUPPORTED = _d(
    "DIA-7145",
    "HTTP_OUTPUT_UNSUPPORTED",
    "the model's answer has a form the KServe v2 endpoint cannot send (not tensors of a "
    "KServe datatype)",
    "the call was served and recorded; use the socket client, or return tensors",
)
TOKEN_RESULT_INVALID = _d(
    "DIA-7180",
    "TOKEN_RESULT_INVALID",
    "Client.infer_tokens got an answer that is not token output (tokens and logprobs)",
    'the service serves logits ([model] output); call Client.infer, or set output = "tokens"',
)

# --- the KServe v2 gRPC endpoint (7170-7179) -------------------------------------------
GRPC_REQUEST_INVALID = _d(
    "DIA-7170",
    "GRPC_REQUEST_INVALID",
    "a KServe v2 gRPC inference request is not of the v2 form (one input; raw contents that "
    "do not match the inputs)",
    "send one input tensor named 'input' (docs/SERVICE.md, KServe v2 over gRPC); nothing was done",
)
GRPC_TENSOR_INVALID = _d(
    "DIA-7171",
    "GRPC_TENSOR_INVALID",
    "a KServe v2 gRPC tensor is malformed: unknown datatype or name, bad shape, or contents "
    "that do not match its shape and datatype",
    "the message names the tensor and the rule; fix the request; nothing was done",
)
GRPC_UNKNOWN_MODEL = _d(
    "DIA-7172",
    "GRPC_UNKNOWN_MODEL",
    "a KServe v2 gRPC request names a model or version this service does not serve",
    "use [grpc] model_name (ModelMetadata tells it) and version 1 or none",
)
GRPC_DRAINING = _d(
    "DIA-7173",
    "GRPC_DRAINING",
    "the service is shutting down and takes no new KServe v2 gRPC calls",
    "retry on another instance, or once the service is back",
)
GRPC_OUTPUT_UNSUPPORTED = _d(
    "DIA-7174",
    "GRPC_OUTPUT_UNSUPPORTED",
    "the model's answer has a form the KServe v2 gRPC endpoint cannot send (not tensors of a "
    "KServe datatype)",
    "the call was served and recorded; use the socket client, or return tensors",
)
GRPC_BUSY = _d(
    "DIA-7175",
    "GRPC_BUSY",
    "[grpc] max_concurrency inference calls are already running: this one was not made",
    "retry after a short back-off, or raise [grpc] max_concurrency",
)

# --- trace context and rate limiting on the wire (7150-7169) ---------------------------
FRAME_CONTEXT_INVALID = _d(
    "DIA-7150",
    "FRAME_CONTEXT_INVALID",
    "an INFER frame's context block (traceparent, rate class) is malformed",
    "fix the client's encoding (docs/PROTOCOL.md, context block); nothing was done",
)

# --- service configuration and operations (7200-7299) -----------------------------------
SERVICE_CONFIG = _d(
    "DIA-7201",
    "SERVICE_CONFIG",
    "the service configuration file is invalid",
    "the message names the key and the rule; fix the file (examples/vigil.toml)",
)
SERVICE_CONFIG_UNREADABLE = _d(
    "DIA-7202",
    "SERVICE_CONFIG_UNREADABLE",
    "the service configuration file is missing or cannot be read",
    "check the path given to --config and the file's permissions",
)
SERVICE_CONFIG_SYNTAX = _d(
    "DIA-7203",
    "SERVICE_CONFIG_SYNTAX",
    "the service configuration file is not valid TOML",
    "fix the file at the line and column the message gives",
)
SERVICE_CONFIG_UNKNOWN_KEY = _d(
    "DIA-7204",
    "SERVICE_CONFIG_UNKNOWN_KEY",
    "the service configuration has a key or section vigil does not know (a typo?)",
    "use one of the known keys the message lists (docs/SERVICE.md)",
)
SERVICE_CONFIG_TYPE = _d(
    "DIA-7205",
    "SERVICE_CONFIG_TYPE",
    "a service configuration value has the wrong type",
    "give the key a value of the type the message names",
)
SERVICE_CONFIG_RANGE = _d(
    "DIA-7206",
    "SERVICE_CONFIG_RANGE",
    "a service configuration value is out of its allowed range or set",
    "choose a value in the range the message states",
)
SERVICE_CONFIG_REQUIRED = _d(
    "DIA-7207",
    "SERVICE_CONFIG_REQUIRED",
    "a required service configuration key or section is absent",
    "add the key the message names (examples/vigil.toml shows each one)",
)
SERVICE_CONFIG_INCONSISTENT = _d(
    "DIA-7208",
    "SERVICE_CONFIG_INCONSISTENT",
    "service configuration keys that are each valid contradict each other",
    "the message names the keys; keep the combination it allows",
)
HTTP_BIND = _d(
    "DIA-7250",
    "HTTP_BIND",
    "the KServe v2 HTTP endpoint cannot listen on its configured address",
    "free the port or change [http].listen; the service does not start without it",
)
HTTP_EXTRA_MISSING = _d(
    "DIA-7251",
    "HTTP_EXTRA_MISSING",
    "[http] is configured but its libraries (werkzeug, waitress) are not installed",
    "pip install 'vigil[http]', or remove [http].listen",
)
TRACESTATE_INVALID = _d(
    "DIA-7260",
    "TRACESTATE_INVALID",
    "a W3C tracestate is malformed (a member not key=value in the W3C grammar, a key twice, "
    "more than 32 members)",
    "the service ignores it (the call keeps its traceparent) and counts it; send at most 32 "
    "lower-case key=value members, each key once",
)
GRPC_BIND = _d(
    "DIA-7230",
    "GRPC_BIND",
    "the KServe v2 gRPC endpoint cannot listen on its configured address",
    "free the port or change [grpc].listen; the service does not start without it",
)
GRPC_EXTRA_MISSING = _d(
    "DIA-7231",
    "GRPC_EXTRA_MISSING",
    "[grpc] is configured but its libraries (grpcio, tritonclient[grpc]) are not installed",
    "pip install 'vigil[grpc]', or remove [grpc].listen",
)
METRICS_BIND = _d(
    "DIA-7210",
    "METRICS_BIND",
    "the metrics and health endpoint cannot listen on its configured address",
    "free the port or change [metrics].listen; the service does not start without it",
)
SYSTEMD_NOTIFY_UNAVAILABLE = _d(
    "DIA-7211",
    "SYSTEMD_NOTIFY_UNAVAILABLE",
    "systemd notification was required but NOTIFY_SOCKET is unset or unreachable",
    'run under a Type=notify unit, or set [systemd].notify to "auto" or false',
)
WATCHDOG_WITHHELD = _d(
    "DIA-7212",
    "WATCHDOG_WITHHELD",
    "the service stopped sending systemd watchdog pings: it cannot give trustworthy answers",
    "systemd restarts the unit after WatchdogSec; the STATUS line and the flight log say why",
)
KNOWN_ANSWER_INVALID = _d(
    "DIA-7213",
    "KNOWN_ANSWER_INVALID",
    "the known-answer file for the service's probes cannot be used",
    "the message says why (unreadable, not in the signed manifest, not input/expected, an "
    "input the contract refuses, another model's); fix the file or re-export the model",
)

LIMITS_INVALID = _d(
    "DIA-7220",
    "LIMITS_INVALID",
    "the [limits] section is inconsistent: no such default class, a trace-id prefix that is "
    "not lower-case hex or that two classes share, too many classes",
    "fix the named key (docs/SERVICE.md, rate limiting); the service does not start",
)
TRACING_EXTRA_MISSING = _d(
    "DIA-7221",
    "TRACING_EXTRA_MISSING",
    "[tracing] is enabled but opentelemetry-sdk (or the OTLP exporter asked for) is not installed",
    "pip install 'vigil[otel]' (and opentelemetry-exporter-otlp-proto-http for otlp), or set "
    "enabled = false",
)

FLEET_EXTRA_MISSING = _d(
    "DIA-8001",
    "FLEET_EXTRA_MISSING",
    "a fleet export format or report needs an optional package that is not installed",
    "install the extra the message names, e.g. pip install 'vigil[fleet]'",
)
EXPORT_NOT_A_FILE = _d(
    "DIA-8002",
    "EXPORT_NOT_A_FILE",
    "a path given to vigil export is not a regular file (a directory, FIFO, socket or device)",
    "give the log file itself; this log is skipped, the others are still exported",
)
EXPORT_KEY_MISMATCH = _d(
    "DIA-8003",
    "EXPORT_KEY_MISMATCH",
    "no public key or forward-secure seed given to vigil export matches the log's sealing key",
    "give the device's own key (--pubkey, repeatable, matched by key id); the log is skipped",
)
EXPORT_DESTINATION = _d(
    "DIA-8004",
    "EXPORT_DESTINATION",
    "the export directory cannot be used (not writable, or holds another schema or state)",
    "choose an empty or earlier vigil export directory of the same schema version",
)
EXPORT_GAP = _d(
    "DIA-8005",
    "EXPORT_GAP",
    "records were evicted by the ring between two exports: they were never exported",
    "export more often than the ring wraps (the finding names the missing range)",
)
EXPORT_AFTER_DAMAGE = _d(
    "DIA-8006",
    "EXPORT_AFTER_DAMAGE",
    "records after the first damage the verifier found were not exported as verified",
    "run vigil verify on the log; --keep-damaged exports them marked after_damage",
)
REPORT_QUERY = _d(
    "DIA-8007",
    "REPORT_QUERY",
    "a fleet report query failed",
    "correct the SQL (the tables are described in docs/EXPORT.md)",
)
REPORT_NO_DATASET = _d(
    "DIA-8008",
    "REPORT_NO_DATASET",
    "the directory given to vigil fleet report holds no vigil export",
    "run vigil export LOG... --to DIR first, then report on DIR",
)
FLEET_FAILED = _d(
    "DIA-8009",
    "FLEET_FAILED",
    "a fleet export or report failed",
    "the message says what and where",
)
REPORT_SCHEMA = _d(
    "DIA-8010",
    "REPORT_SCHEMA",
    "the directory given to vigil fleet report holds an export of a schema this vigil does "
    "not read",
    "export the logs again with this vigil into a new directory (docs/EXPORT.md, schema versions)",
)
EXPORT_FORKED = _d(
    "DIA-8011",
    "EXPORT_FORKED",
    "a log whose log id this export already holds has other records at the same seq (a cloned "
    "device image, a restored backup that went on): it was not exported",
    "export the other copy into another directory; give a cloned device a fresh log",
)

REGISTRY: dict[str, Diagnostic] = {
    d.code: d for d in list(globals().values()) if isinstance(d, Diagnostic)
}
"""Every registered code, by its ``DIA-xxxx`` string."""


def lookup(code: str | int) -> Diagnostic:
    """Return the registered diagnostic for ``"DIA-2047"`` or ``2047``.

    Raises:
        KeyError: the code is not registered.
    """
    key = f"DIA-{code:04d}" if isinstance(code, int) else code
    return REGISTRY[key]
