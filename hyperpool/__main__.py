"""``python -m hyperpool`` is the ``hyperpool`` command (used to spawn job-model executors)."""

from hyperpool.cli import main

main()
