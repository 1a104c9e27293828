"""``millpond completion SHELL``: the script that makes the shell complete millpond's
commands and options (Typer's own completion, driven by ``_MILLPOND_COMPLETE``)."""

from __future__ import annotations

import enum
import os
from typing import Annotated

import typer
from typer._completion_classes import completion_init
from typer._completion_shared import get_completion_script

COMPLETE_VAR = "_MILLPOND_COMPLETE"
"""Set by the completion script when the shell asks millpond what may come next."""


class Shell(enum.StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"
    powershell = "powershell"


def completion(
    shell: Annotated[Shell, typer.Argument(help="The shell to complete in.")],
) -> None:
    """Print the shell's completion script for millpond. Load it from your shell's
    start-up file:

    \b
        bash:  echo 'eval "$(millpond completion bash)"' >> ~/.bashrc
        zsh:   echo 'eval "$(millpond completion zsh)"' >> ~/.zshrc
        fish:  millpond completion fish > ~/.config/fish/completions/millpond.fish
        PowerShell:  millpond completion powershell >> $PROFILE

    Then a new shell completes commands, subcommands and options (Tab)."""
    completion_init()
    typer.echo(get_completion_script(prog_name="millpond", complete_var=COMPLETE_VAR, shell=shell))


def answering() -> bool:
    """Whether this run is the shell asking for completions (then make them possible)."""
    if COMPLETE_VAR not in os.environ:
        return False
    completion_init()
    return True
