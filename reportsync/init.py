"""`reportsync init`: write the commented starter config (generated from the schema). Asks nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from reportsync.config import PROVIDER_PRESETS, starter_config
from reportsync.errors import ExitCode, UsageError
from reportsync.fsutil import ensure_private_dir, write_atomically


@dataclass(frozen=True)
class InitResult:
    path: Path
    provider: str | None
    source: str
    username_given: bool  # False: the config holds a placeholder the user must replace

    exit_code: ClassVar[ExitCode] = ExitCode.OK

    @property
    def provider_title(self) -> str | None:
        return PROVIDER_PRESETS[self.provider].title if self.provider else None


def write_starter_config(path: Path, *, source_name: str, provider: str | None,
                         username: str | None, force: bool) -> InitResult:
    """The starter config at ``path`` (0600, atomically; its folder 0700 if created)."""
    if path.exists() and not force:
        raise UsageError(f"{path} exists; not overwriting it", path=str(path),
                         remedy="Pass --force to replace it, or --config PATH for another file.")
    try:
        text = starter_config(source_name, provider, username=username)
    except ValueError as problem:
        raise UsageError(str(problem)) from None
    ensure_private_dir(path.parent)
    write_atomically(path, text.encode("utf-8"))
    return InitResult(path=path, provider=provider, source=source_name,
                      username_given=username is not None)
