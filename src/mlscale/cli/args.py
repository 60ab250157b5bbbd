"""The one argparse flavour every command uses: a usage mistake is one line, like every other."""

import argparse

from mlscale.errors import MlscaleError


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors raise MlscaleError (one line, non-zero exit) instead of printing
    the usage block and exiting 2."""

    def error(self, message: str):
        raise MlscaleError(f"{message} (see {self.prog} --help)")


def png_file(value: str) -> str:
    """argparse `type` for an output image path: it must end in .png (matplotlib picks the format
    from the suffix)."""
    if not value.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"must name a .png file, got '{value}'")
    return value
