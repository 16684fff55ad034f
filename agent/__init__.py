"""The R4 practice agent: keeps Flynotes in sync with a practice's Carestream R4 database."""

from agent._version import __version__

__all__ = ["__version__"]
