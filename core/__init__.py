"""Plumbing every layer shares: settings, database, errors, retry, vocabulary, migrations."""
