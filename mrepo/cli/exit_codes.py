"""The exit codes of the ``mrepo`` command: one table, the same code for the same failure everywhere.

Every mrepo error class carries its code (``exit_code``); the top-level command group turns an
uncaught :class:`mrepo.store.MrepoError` into ``error: <one line>`` on stderr and that code.
``python -m mrepo.cli.exit_codes`` prints the table as Markdown (README.md and docs/exit-codes.md
hold exactly that text; a test keeps them in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit status of ``mrepo``."""

    OK = 0
    ERROR = 1
    BAD_INPUT = 2
    REF_CONFLICT = 3
    MERGE_CONFLICT = 4
    ACCESS_DENIED = 5
    UNREACHABLE = 6
    NOT_FOUND = 7
    CORRUPT = 8
    CHECK_NOT_CLEAN = 9
    MISSING_EXTRA = 10


@dataclass(frozen=True)
class ExitCodeDoc:
    code: ExitCode
    meaning: str
    raised_by: str


TABLE: tuple[ExitCodeDoc, ...] = (
    ExitCodeDoc(ExitCode.OK, "success", "-"),
    ExitCodeDoc(ExitCode.ERROR, "any other failure (a bug or an environment problem not listed here)",
                "`MrepoError`, `WorkerFailure`"),
    ExitCodeDoc(ExitCode.BAD_INPUT, "bad argument, option, value, name or input file; nothing was written",
                "`InvalidInput`, `InvalidName`, usage errors"),
    ExitCodeDoc(ExitCode.REF_CONFLICT, "a compare-and-swap on a ref lost a race (someone else moved it); "
                "fetch/pull and retry, or push `--force`", "`RefConflict`"),
    ExitCodeDoc(ExitCode.MERGE_CONFLICT, "a merge or pull-request merge the chosen policy does not resolve",
                "`MergeConflict`"),
    ExitCodeDoc(ExitCode.ACCESS_DENIED, "the server refused: no token, a bad token or a role too low "
                "(HTTP 401/403)", "`AccessDenied`"),
    ExitCodeDoc(ExitCode.UNREACHABLE, "a remote server or S3 endpoint cannot be reached or failed, "
                "or the S3 bucket does not exist", "`ServerError`, `Unreachable`"),
    ExitCodeDoc(ExitCode.NOT_FOUND, "no repository, revision, branch, tag, object or pull request of that name",
                "`RepositoryNotFound`, `RefNotFound`, `ObjectNotFound`"),
    ExitCodeDoc(ExitCode.CORRUPT, "a stored object does not match its hash; `verify` found problems",
                "`CorruptObject`, `mrepo verify`"),
    ExitCodeDoc(ExitCode.CHECK_NOT_CLEAN, "`mrepo pr check` found collisions, duplicates, id clashes or "
                "conflicts (the report is stored)", "`mrepo pr check`"),
    ExitCodeDoc(ExitCode.MISSING_EXTRA, "an optional part is not installed (`pip install mrepo[ray]`, "
                "`mrepo[server]`, `mrepo[s3]` or `mrepo[all]`)", "`MissingExtra`"),
)


def summary() -> str:
    """One line for ``mrepo --help``: ``0 ok, 1 error, 2 bad input, ...``."""
    return ", ".join(f"{c.value} {c.name.lower().replace('_', ' ')}" for c in ExitCode)


def markdown_table() -> str:
    """The table as Markdown (the text README.md and docs/exit-codes.md carry)."""
    lines = ["| code | meaning | raised by |", "| --- | --- | --- |"]
    lines += [f"| {d.code.value} | {d.meaning} | {d.raised_by} |" for d in TABLE]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(markdown_table(), end="")
