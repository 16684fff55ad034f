"""Runs exactly the agent version Flynotes names, through TUF-verified, signed updates."""
