"""The grader's own exceptions; only the CLI turns them into exit codes."""


class GraderError(Exception):
    """The grader cannot work (unreadable model, unwritable output): exit 1 with this message."""


class ConfigError(GraderError):
    """A bad option value or configuration file: exit 2."""


class SandboxError(GraderError):
    """The sandbox itself failed (a student process that cannot start, isolation that is required but missing)."""
