"""Fuzzing: every decoder and the HTTP routes against hostile input (``make fuzz``; a short run in the suite)."""
