"""`python -m core` is the `signalengine` command (used by the supervisor for its children)."""

from core.cli import main

main()
