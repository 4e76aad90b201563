"""``python -m sgxsim`` (and the ``sgxsim`` console script): the command line.

Ctrl-C during start-up (while click and the command table are imported) is held until the
imports are done and then ends the process with exit code 130 and one line, like an interrupt
at any later point (:mod:`sgxsim.cli.boundary`); never a ``KeyboardInterrupt`` traceback.
"""

from __future__ import annotations

import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType

__all__ = ["main"]


def main() -> None:
    """Import the CLI with SIGINT recorded, not raised; then run it inside its error boundary."""
    pressed: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        pressed.append(signum)

    old = signal.signal(signal.SIGINT, record)
    try:
        from sgxsim.cli import main as cli
    finally:
        signal.signal(signal.SIGINT, old)
    if pressed:
        sys.stderr.write("sgxsim: error: interrupted\n")
        sys.exit(130)
    cli(prog_name="sgxsim")


if __name__ == "__main__":
    main()
