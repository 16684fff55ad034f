"""The Flynotes backend over HTTP (the only module that talks to it: `client`)."""
