"""Generator of the bad-input corpus (files are written at test time, never committed)."""
