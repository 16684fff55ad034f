"""`r4agent config init [--path PATH] [--force]`: write a commented starter config.toml.

For a practice set up by hand (the MSI writes the file itself): every key a practice sets, with
what it means, in single-quoted strings so a Windows path pasted in stays what it says. It is
valid once the licence key is filled in (`r4agent doctor` checks it). An existing file is
never overwritten unless --force is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Final

from installer.service import DEFAULT_BACKEND_URL

STARTER: Final = """\
# R4 agent configuration. Every key: docs/config.md. Check it with: r4agent doctor
#
# Text goes in quotes. Use 'single quotes' for Windows paths and server names: in
# "double quotes" a backslash starts an escape ("C:\\temp" would hold a tab).

# The practice's licence key, as Flynotes issued it (or, instead, a file holding it:
# licence_key_file = 'licence.key', next to this file).
licence_key = ''

# The Flynotes backend, as given with the licence.
backend_url = '{backend_url}'

# Where the agent keeps its logs and state (default: this file's folder).
# data_dir = 'C:\\ProgramData\\Flynotes\\R4Agent'

# Behind a web proxy:
# proxy = 'http://proxy.practice.local:3128'

[database]
# The R4 SQL Server instance and database (Windows authentication, the best installed
# SQL Server ODBC driver). '.' is the default instance on this machine; a named instance
# is 'SERVER\\INSTANCE'.
server = '.'
database = 'sys2000'
# A SQL Server login instead of Windows authentication (where the service account has no
# login of its own; the MSI's SQLUSER / SQLPASSWORD write these):
# user = 'r4reader'
# password_file = 'sql.password'
# A local server that speaks only TLS 1.0/1.1 is retried without encryption by itself; for a
# remote one, only this turns encryption off:
# encrypt = false
# Or, instead of server and database, a full ODBC connection string:
# connection_string = '{connection_example}'

[rollbar]
# Error reports to Flynotes (scrubbed of patient data). Without a token, errors stay in the
# local log only.
# access_token_file = 'rollbar.token'
environment = 'production'
"""


CONNECTION_EXAMPLE: Final = (
    "Driver={ODBC Driver 18 for SQL Server};Server=R4SERVER\\R4;Database=sys2000;"
    "Trusted_Connection=yes;TrustServerCertificate=yes"
)


def starter_config(backend_url: str = DEFAULT_BACKEND_URL) -> str:
    return STARTER.format(backend_url=backend_url, connection_example=CONNECTION_EXAMPLE)


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("action", choices=["init"], help="init: write a starter config.toml")
    parser.add_argument(
        "--path",
        type=Path,
        default=None,
        help="where to write it (default: R4AGENT_CONFIG or the data directory's config.toml)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing file")


def command(args: argparse.Namespace) -> int:
    from agent.config import config_path

    path: Path = config_path(args.path, os.environ)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w" if args.force else "x", encoding="utf-8", newline="\n") as out:
            out.write(starter_config())
    except FileExistsError:
        print(f"r4agent: {path} exists; not replaced (use --force to replace it)", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"r4agent: cannot write {path} ({type(e).__name__})", file=sys.stderr)
        return 1
    print(f"wrote {path}: fill in licence_key, then run r4agent doctor")
    return 0
