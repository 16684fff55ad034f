"""`r4agent` command line. Each subcommand lives in its own module, imported only when chosen,
so the service's `run` start-up does not pay for the demo's or the doctor's imports."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent._version import __version__


@dataclass(frozen=True)
class Subcommand:
    name: str
    module: str  # defines add_arguments(parser) and command(args) -> int
    help: str
    dev_only: bool = False  # its module is not frozen into the exe (build/r4agent.spec)


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("run", "agent.app", "run the agent as the service does (24 h life)"),
    Subcommand(
        "doctor", "agent.doctor", "check config, database, backend, SQS, updates, the service"
    ),
    Subcommand(
        "status", "agent.ops.status", "what the agent is doing: service, versions, cycle, queue"
    ),
    Subcommand(
        "support-bundle", "agent.ops.bundle", "one zip for Flynotes support (no patient data)"
    ),
    Subcommand("config", "agent.ops.config_init", "config init: write a commented starter config"),
    Subcommand("sync-patient", "agent.support", "send one patient to Flynotes now"),
    Subcommand("bulk-upload", "agent.support", "upload all patients to Flynotes now"),
    Subcommand("messages", "agent.commands.schema", "print the SQS message JSON Schemas"),
    Subcommand(
        "demo", "agent.standin.demo", "practice-in-a-box: stand-ins + real code paths", True
    ),
    Subcommand("service", "installer.service", "Windows service host and MSI actions"),
    Subcommand("self-test", "updater.self_test", "check this build can update itself"),
)


def _chosen(argv: Sequence[str]) -> str | None:
    names = {s.name for s in SUBCOMMANDS}
    return next((a for a in argv if a in names), None)


def _not_in_this_build(name: str) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        print(
            f"r4agent {name} is developer tooling and is not part of the installed agent; "
            f"run it from a source checkout: bash .ci/setup.sh && .venv/bin/r4agent {name}",
            file=sys.stderr,
        )
        return 2

    return command


def build_parser(argv: Sequence[str], *, frozen: bool | None = None) -> argparse.ArgumentParser:
    """`frozen`: running as the PyInstaller exe (default: `sys.frozen`). Dev-only subcommands
    are then hidden from --help and answer with one line instead of an import error."""
    if frozen is None:
        frozen = bool(getattr(sys, "frozen", False))
    parser = argparse.ArgumentParser(
        prog="r4agent",
        description="Keeps Flynotes in sync with this practice's Carestream R4 database.",
        epilog="Exit codes: see docs/exit-codes.md.",
    )
    parser.add_argument("--version", action="version", version=f"r4agent {__version__}")
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)
    chosen = _chosen(argv)
    for sub in SUBCOMMANDS:
        if frozen and sub.dev_only:
            # No help=: not listed in --help. Whatever follows (its usual options, -h) is taken
            # as plain words, so the answer is the one line below, not a usage error.
            sp = subparsers.add_parser(sub.name, add_help=False, prefix_chars="\0")
            sp.add_argument("ignored", nargs="*")
            sp.set_defaults(_command=_not_in_this_build(sub.name))
            continue
        sp = subparsers.add_parser(sub.name, help=sub.help, description=sub.help)
        if sub.name == chosen:
            module = importlib.import_module(sub.module)
            module.add_arguments(sp, sub.name)
            sp.set_defaults(_command=module.command)
    return parser


def main(argv: Sequence[str] | None = None, *, frozen: bool | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_list, frozen=frozen).parse_args(args_list)
    result: int = args._command(args)
    return result
