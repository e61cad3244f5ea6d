"""The ``edge-vl`` command: the group, error handling and exit codes. Commands live in
:mod:`~edge_vl.cli.build_commands` (workstation: build, search) and
:mod:`~edge_vl.cli.device_commands` (predict, info, bench, keygen, sign). Heavy imports (torch,
transformers) happen inside the commands that need them, so device commands and ``--help`` stay
light.

Exit codes: 0 success, 1 runtime failure, 2 bad input (usage, data, bundle, model).
"""

from __future__ import annotations

import os

import click

from edge_vl._version import __version__
from edge_vl.cli import build_commands, device_commands, operations
from edge_vl.errors import EdgeVLError


class _Group(click.Group):
    """Turns :class:`EdgeVLError` into a one-line message and the error's exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeVLError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-vl")
def cli() -> None:
    """edge-vl: adapt a vision-language model with DAS (skip redundant layers, train light
    adapters) and run it on CPUs with OpenVINO.

    \b
    Typical flow:
      edge-vl build --model DIR --data train.jsonl --eval-data val.jsonl --out BUNDLE
      edge-vl predict BUNDLE photo.png "what color is the shape?"
      edge-vl info BUNDLE
      edge-vl bench BUNDLE
      edge-vl eval BUNDLE rows.jsonl --min-accuracy 0.95     (on the target PC)
      edge-vl monitor BUNDLE monitor.db                      (drift triggers)
    """


for command in (
    build_commands.build,
    build_commands.search,
    device_commands.predict,
    device_commands.info,
    device_commands.bench,
    device_commands.keygen,
    device_commands.sign,
    operations.evaluate_command,
    operations.monitor,
):
    cli.add_command(command)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cli(prog_name="edge-vl")
