"""Numbered migrations, read with importlib.resources (`signalengine.sql`)."""
