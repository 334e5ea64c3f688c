"""Checks of the files a run writes when it ends (``--json-summary``, ``--timeline``).

They are written only after the whole workflow has run, so a typo in their path must be caught
*before* the first task starts: otherwise a long run ends in an error that says nothing about
the workflow (and, as exit code 1, reads as "workflow failed").
"""

from __future__ import annotations

import os
from pathlib import Path

from hyperpool.errors import ConfigError


def check_output_file(path: str | Path, *, what: str) -> Path:
    """``path`` as a :class:`Path` if a file can be written there, else a :class:`ConfigError`.

    The directory must exist and be writable, and ``path`` must not be a directory. The file
    itself is not created: a run that is interrupted leaves nothing behind.
    """
    path = Path(path)
    parent = path.parent  # Path("s.json").parent is Path("."), never empty
    if path.is_dir():
        raise ConfigError(f"the {what} is a directory; give a file name", source=str(path))
    if not parent.is_dir():
        raise ConfigError(f"the {what}'s directory {str(parent)!r} does not exist; create it "
                          "or choose another path", source=str(path))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"the {what}'s directory {str(parent)!r} is not writable",
                          source=str(path))
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"the {what} exists and is not writable", source=str(path))
    return path
