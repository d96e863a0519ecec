"""Examples outside the installed package (import them from the repository root)."""
