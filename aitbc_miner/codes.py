"""Stable codes: job error codes the client sees, and the process's exit codes.

Each job error code has one line of meaning in ``ERROR_CODES``; the README's table is
generated from it and a test checks that every code has a row and is produced somewhere.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """Why a job ended without a result; sent as ``error_code`` to ``/fail``."""

    E_BADJOB = "E_BADJOB"
    E_UNSUPPORTED = "E_UNSUPPORTED"
    E_DENY = "E_DENY"
    E_TIMEOUT = "E_TIMEOUT"
    E_OOM = "E_OOM"
    E_EXIT = "E_EXIT"
    E_OUTPUT_LIMIT = "E_OUTPUT_LIMIT"
    E_CANCELED = "E_CANCELED"
    E_INTERRUPTED = "E_INTERRUPTED"
    E_BADRESULT = "E_BADRESULT"
    E_BACKEND_UNAVAILABLE = "E_BACKEND_UNAVAILABLE"
    E_MODEL_NOT_FOUND = "E_MODEL_NOT_FOUND"
    E_GPU_LOST = "E_GPU_LOST"
    E_DISK = "E_DISK"
    E_SANDBOX_UNAVAILABLE = "E_SANDBOX_UNAVAILABLE"
    E_INTERNAL = "E_INTERNAL"


ERROR_CODES: dict[ErrorCode, str] = {
    ErrorCode.E_BADJOB: "the job payload is malformed (missing or wrong-typed fields)",
    ErrorCode.E_UNSUPPORTED: "this miner cannot run the job's type (or has no slot of its kind)",
    ErrorCode.E_DENY: "the job asks for something the operator's allowlist refuses",
    ErrorCode.E_TIMEOUT: "the job ran past its wall-clock limit and was stopped",
    ErrorCode.E_OOM: "the job hit its memory limit",
    ErrorCode.E_EXIT: "the job's process exited non-zero (code and stderr tail in the message)",
    ErrorCode.E_OUTPUT_LIMIT: "the job wrote more output than its cap",
    ErrorCode.E_CANCELED: "the operator (or shutdown) canceled the job",
    ErrorCode.E_INTERRUPTED: "the agent stopped while the job was running; it is not re-run",
    ErrorCode.E_BADRESULT: "the job's output could not be turned into a JSON result",
    ErrorCode.E_BACKEND_UNAVAILABLE: (
        "a backend the job needs (inference server, artifact store) could not be reached"),
    ErrorCode.E_MODEL_NOT_FOUND: "the requested model is not available on this miner",
    ErrorCode.E_GPU_LOST: "the job's GPU fell off the bus while it ran",
    ErrorCode.E_DISK: (
        "the job went over its disk quota, or the miner could not write the job's files "
        "(disk full, no descriptors, no permission)"),
    ErrorCode.E_SANDBOX_UNAVAILABLE: (
        "this host cannot build the job sandbox (bubblewrap or user namespaces missing)"),
    ErrorCode.E_INTERNAL: "a bug in the miner; the message says where",
}


class ExitCode(IntEnum):
    """Process exit codes; systemd restarts on anything but OK."""

    OK = 0  # clean stop (drained, or asked to quit)
    FATAL = 1  # any other fatal error
    CONFIG = 2  # invalid configuration or command line
    AUTH = 3  # the coordinator refused the miner's credential
