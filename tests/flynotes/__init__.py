"""The Flynotes wire contract, client and stand-in."""
