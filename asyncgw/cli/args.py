"""The command line's grammar: argparse, and the checks argparse cannot do.

:func:`parse` turns ``argv`` into :class:`Args` or raises
:class:`UsageError` with a one-line message (the caller prints it and
exits with status 2). ``run`` takes its command after ``--`` verbatim, so
the command's own options never reach argparse. ``serve`` hands the rest
of the line to :func:`asyncgw.server.main` untouched.

The connection and output options are accepted before the subcommand and
after it (``asyncgw -u root run ...`` and ``asyncgw run -u root ...``).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import NoReturn

from ..transports.sshpool import _load_identity
from .targets import Options, Target, parse_hosts

__all__ = ["COMMANDS", "Args", "UsageError", "build_parser", "parse"]

COMMANDS = ("run", "put", "get", "exec", "map", "serve")

DESCRIPTION = """\
Run commands, Python code and file copies on many hosts at once, over SSH
(asyncssh: no ssh binary, one connection per host) or here.

HOSTS is a node set: 'node[1-16,20]', 'root@web[01-04]:2222,db1',
'@hostfile'. 'localhost' (or 'local') runs here, without SSH.
"""

EPILOG = """\
examples:
  asyncgw run 'node[1-8]' -- uptime
  asyncgw run -t 10 --json web[1-4],db1 -- 'systemctl is-active nginx'
  asyncgw put 'node[1-8]' build/app.tar.gz /tmp/
  asyncgw get 'node[1-8]' /var/log/syslog logs/      # logs/node1/syslog, ...
  asyncgw exec 'node[1-8]' -c 'import os; channel.send(os.cpu_count())'
  asyncgw serve --port 8888

On a terminal, a live display shows progress; then a summary groups the
hosts with identical output and exit status. --json prints one object per
host instead. The exit status is the worst host's: 255 if a host could not
be reached, 124 if one timed out, else the largest exit status; 130 after
Ctrl-C (which stops the remote commands); 2 for bad usage.
"""

#: Options that take a value (to find the subcommand among the words).
_VALUED = frozenset(
    {"-u", "--user", "-i", "--identity", "-p", "--port", "--known-hosts", "-J", "--jump"}
    | {"-t", "--timeout", "--connect-timeout", "--svg"}
)


class UsageError(Exception):
    """Raised by :func:`parse` for a command line that is not one; the
    message says what is wrong, on one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


@dataclass
class Args:
    """A parsed command line."""

    command: str
    pattern: str = ""
    targets: list[Target] = field(default_factory=list)
    options: Options = field(default_factory=Options)
    timeout: float | None = None
    json: bool = False
    progress: bool = True
    quiet: bool = False
    #: Save the summary, as rich renders it, to this SVG file.
    svg: str | None = None
    #: run: the command; exec: the code.
    remote_command: str = ""
    sources: list[str] = field(default_factory=list)
    dest: str = ""
    mkdir: bool = False
    python: str | None = None
    #: serve: the rest of the line, for asyncgw.server.
    serve_argv: list[str] = field(default_factory=list)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return int(text)


def _add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options every command takes; ``suppress``: leave them out of
    the namespace when not given (for subcommands, so that their absence
    does not undo the same option given before the subcommand)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    ssh = parser.add_argument_group("connection options")
    ssh.add_argument("-u", "--user", default=default(None), help="login name on the hosts")
    ssh.add_argument(
        "-i", "--identity", metavar="KEY", default=default(None), help="private key file to offer"
    )
    ssh.add_argument(
        "-p", "--port", type=_port, default=default(None), help="sshd's port (default 22)"
    )
    ssh.add_argument(
        "--known-hosts",
        metavar="PATH|none",
        default=default(None),
        help="known_hosts file to check host keys against (default ~/.ssh/known_hosts); "
        "'none' turns checking off",
    )
    ssh.add_argument(
        "-J", "--jump", metavar="[USER@]HOST[:PORT]", default=default(None),
        help="connect through this host (ProxyJump)",
    )  # fmt: skip
    ssh.add_argument(
        "--connect-timeout", type=_positive, metavar="SECONDS", default=default(None),
        help="for connecting and authenticating (default 30)",
    )  # fmt: skip
    out = parser.add_argument_group("run and output options")
    out.add_argument(
        "-t", "--timeout", type=_positive, metavar="SECONDS", default=default(None),
        help="stop each host's command after this long (exit status 124)",
    )  # fmt: skip
    out.add_argument(
        "--json", action="store_true", default=default(False),
        help="print a JSON array, one object per host (host, exit_code, stdout, stderr, "
        "timeouted, error, start, end), and nothing else",
    )  # fmt: skip
    out.add_argument(
        "--no-progress", action="store_true", default=default(False),
        help="no live display on a terminal",
    )  # fmt: skip
    out.add_argument(
        "-q", "--quiet", action="store_true", default=default(False),
        help="print only the output and the failures: no live display, no final count",
    )  # fmt: skip
    # Hidden: renders the summary with rich and saves it (the docs' picture).
    out.add_argument("--svg", metavar="FILE", default=default(None), help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``asyncgw``'s command line."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="asyncgw", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    _add_common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    def command(name: str, usage: str, summary: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, usage=usage, help=summary, description=description, formatter_class=formatter
        )
        sub.add_argument("hosts", metavar="HOSTS", help="node set: 'node[1-8],root@db1:2222'")
        _add_common(sub, suppress=True)
        return sub

    command(
        "run",
        "asyncgw run [options] HOSTS -- COMMAND...",
        "run a shell command on every host",
        "Run COMMAND with the login shell on every host (/bin/sh here), at once.\n"
        "Everything after '--' is the command, joined by spaces as ssh does:\n"
        "quote it for the remote shell. '{{{host}}}' in it becomes each host's name.\n\n"
        "  asyncgw run 'node[1-8]' -- uptime\n"
        "  asyncgw run -t 5 localhost,n1 -- 'echo {{{host}}}; df -h /'",
    )
    for name, verb in (("put", "to"), ("get", "from")):
        sub = command(
            name,
            f"asyncgw {name} [options] HOSTS SRC... DEST",
            f"copy files and trees {verb} every host",
            f"Copy files and directory trees {verb} every host, as 'scp -r': SRC goes into\n"
            "DEST if it is a directory, else becomes DEST. Modes and times are kept.\n"
            + (
                "The local SRC files are read once for all the hosts.\n\n"
                "  asyncgw put 'node[1-8]' app.tar.gz conf/ /opt/app/"
                if name == "put"
                else "With several hosts, each host's files go into DEST/HOST/.\n\n"
                "  asyncgw get 'node[1-8]' /var/log/syslog logs/"
            ),
        )
        sub.add_argument("paths", nargs="+", metavar="SRC... DEST", help="sources, then DEST")
        sub.add_argument("--mkdir", action="store_true", help="create DEST first")
    sub = command(
        "exec",
        "asyncgw exec [options] HOSTS (-c CODE | -f FILE)",
        "run Python code on every host, printing what it sends",
        "Start a Python interpreter on every host (over SSH: python3 there, nothing\n"
        "to install) and run CODE in it. CODE has a 'channel': each value it sends\n"
        "is printed as 'HOST: value'. A host is ok when the code ends, failed (exit\n"
        "status 1) when it raises; the remote traceback is shown.\n\n"
        "  asyncgw exec 'node[1-8]' -c 'import os; channel.send(os.getloadavg())'",
    )
    code = sub.add_mutually_exclusive_group(required=True)
    code.add_argument("-c", dest="code", metavar="CODE", help="the Python code")
    code.add_argument("-f", dest="file", metavar="FILE", help="a file of Python code ('-': stdin)")
    sub.add_argument("--python", metavar="PATH", help="remote interpreter (default python3)")
    commands.add_parser(  # its grammar is in .map (asyncgw map --help)
        "map", help="call MODULE:FUNCTION on each line of a JSON file, on the hosts", add_help=False
    )
    commands.add_parser(
        "serve",
        help="run an asyncgw socket server (asyncgw serve --help)",
        add_help=False,
    )
    return parser


def _find_command(argv: list[str]) -> tuple[str | None, int]:
    """The subcommand and its position, skipping options and their values."""
    skip = False
    for index, word in enumerate(argv):
        if skip:
            skip = False
        elif word == "--":
            break
        elif word.startswith("-"):
            skip = word in _VALUED
        else:
            return word, index
    return None, len(argv)


def parse(argv: list[str]) -> Args:
    """The command line ``argv`` (without the program name) as :class:`Args`.

    :raises UsageError: for a command line that is not one.
    :raises SystemExit: (0) after printing help for ``-h``.
    """
    parser = build_parser()
    command, index = _find_command(argv)
    if command == "serve":
        return Args("serve", serve_argv=argv[index + 1 :])
    remote: list[str] = []
    if command == "run":
        rest = argv[index + 1 :]
        if "--" not in rest:
            if not {"-h", "--help"} & set(rest):
                raise UsageError(
                    "asyncgw run: missing '--' before the command: asyncgw run HOSTS -- COMMAND"
                )
        else:
            split = index + 1 + rest.index("--")
            argv, remote = argv[:split], argv[split + 1 :]
    if command is None and not {"-h", "--help"} & set(argv):
        raise UsageError(f"asyncgw: missing command ({', '.join(COMMANDS)}); see asyncgw --help")
    namespace = parser.parse_args(argv)
    if command == "run" and not remote:
        raise UsageError("asyncgw run: no command after '--'")
    try:
        targets = parse_hosts(namespace.hosts)
    except ValueError as exc:
        raise UsageError(f"asyncgw {command}: bad HOSTS: {exc}") from None
    if namespace.identity is not None and any(target.host for target in targets):
        # A key that cannot be used is the caller's mistake: said before connecting.
        try:
            _load_identity(os.path.expanduser(namespace.identity))
        except ValueError as exc:
            raise UsageError(f"asyncgw {command}: -i {namespace.identity}: {exc}") from None
    args = Args(
        command=namespace.command,
        pattern=namespace.hosts,
        targets=targets,
        options=Options(
            user=namespace.user,
            identity=namespace.identity,
            port=namespace.port,
            known_hosts=namespace.known_hosts,
            jump=namespace.jump,
            connect_timeout=namespace.connect_timeout,
        ),
        timeout=namespace.timeout,
        json=namespace.json,
        progress=not namespace.no_progress and not namespace.quiet,
        quiet=namespace.quiet,
        svg=namespace.svg,
        remote_command=" ".join(remote),
    )
    if args.command in ("put", "get"):
        if len(namespace.paths) < 2:
            raise UsageError(f"asyncgw {args.command}: needs SRC... and DEST")
        args.sources, args.dest = namespace.paths[:-1], namespace.paths[-1]
        args.mkdir = namespace.mkdir
    elif args.command == "exec":
        args.python = namespace.python
        args.remote_command = (
            namespace.code if namespace.code is not None else _read(namespace.file)
        )
    return args


def _read(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"asyncgw exec: cannot read {path}: {exc}") from None
