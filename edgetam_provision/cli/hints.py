"""The options and commands a hint refers to, said in one place.

The library says what would help in its own words ("choose another cache folder", "check online
which credentials are rejected"); only the CLI knows which option or command does it. This table
turns the one into the other wherever the CLI prints the library's words: an error's message and
hint (on stderr and in --json), progress lines, doctor's findings, push's rows and verify's note.
"""

from __future__ import annotations

#: the library's words -> the CLI's; a row whose words hold another's comes first
OPTION_WORDS: tuple[tuple[str, str], ...] = (
    ("another cache folder", "another --cache-dir"),
    ("another output folder", "another --out"),
    ("again with tracebacks shown", "again with --debug"),
    ("another address or port", "another --host or --port"),
    ("another port", "another --port"),
    ("an address of this machine to listen on", "an address of this machine for --host"),
    ("compress with gzip or none", "use --compress gzip/none"),
    ("fetch them with a restore, on a host you can ssh to", "`provision fetch --host HOST --restore`"),
    ("fetch them on a host you can ssh to", "`provision fetch --host HOST` (or --local)"),
    ("fetch through a host you can ssh to", "`provision fetch --host HOST` through a machine"),
    ("restore them from backups", "`provision restore model_backups/`"),
    ("a synthetic verify", "`provision verify --synthetic`"),
    ("the online check of doctor", "`provision doctor --online`"),
    ("doctor's fix", "`provision doctor --fix`"),
    ("fetch the models here", "use `provision fetch --local`"),
    ("a public repo to probe", "a public repo: pass one with --repo ORG/NAME"),
    ("a repo the endpoint has", "a repo the endpoint has: --repo ORG/NAME"),
    # fetch: where the agent runs, what it downloads, how it connects and how the bytes travel
    ("another Python on the host", "another --remote-python"),
    ("the host's Python", "--remote-python"),
    ("install it into a temporary folder for this run",
     "pass --bootstrap to install it into a temporary folder"),
    ("the repo type", "--repo-type"),
    ("an endpoint URL", "--endpoint URL"),
    ("the endpoint URL", "--endpoint"),
    ("your token from an environment variable", "--token-env VAR with your token"),
    ("include patterns", "--include"),
    ("exclude patterns", "--exclude"),
    ("download on a host you can ssh to", "fetch with --host HOST"),
    ("run again accepting the new host key", "run again with --accept-new-host-key"),
    ("name a key file", "pass --identity KEY"),
    ("the login user", "--user"),
    ("raise the deadline", "raise --timeout"),
    ("raise the stall window", "raise --stall"),
    ("the openssh transfer", "--transfer openssh"),
    ("the stream transfer", "--transfer stream"),
    # push, restore, verify
    ("an Ansible inventory file", "--inventory FILE"),
    ("the host pattern", "--limit"),
    ("without keeping the refs", "without --keep-refs"),
    ("a run without the quality gate", "--no-quality-gate"),
    ("a JPEG or PNG file as the picture", "a JPEG or PNG file to --image"),
    ("leave the repo out", "leave --repo out"),
    ("pick the device automatically", "use --device auto"),
)


def with_options(hint: str) -> str:
    """`hint` as the CLI says it: each of the library's words for a setting or a next step becomes
    the option or command that does it."""
    for words, cli in OPTION_WORDS:
        hint = hint.replace(words, cli)
    return hint
