"""`python -m signalengine` is the `signalengine` command (the supervisor runs its children so)."""

from signalengine.cli import main

main()
