"""The two error roots every side effect translates into at its boundary.

Messages of these errors may reach logs and Rollbar, so they must never carry patient data
(names, dates of birth, addresses, phone, email, notes) or secrets: say which key, table,
driver, endpoint or patient *code* was involved, never what the record held.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class TransientError(AgentError):
    """Worth retrying later: network blips, 5xx, throttling, a database that is restarting."""


class PermanentError(AgentError):
    """Retrying cannot help: bad input, unknown patient, licence rejected, schema missing."""


class ConfigError(PermanentError):
    """The configuration is missing or wrong; the message names the file, the key and the fix."""


class UnsafeStatementError(PermanentError):
    """Something other than a single SELECT was about to reach the R4 database."""
