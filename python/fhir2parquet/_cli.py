"""The ``fhir2parquet`` command the wheel puts on PATH: the Rust binary's command line, run by
the same code in the extension module."""

import signal
import sys

from . import _native


def main() -> int:
    # Ctrl-C acts as it does on the binary: the default action, or the handler an export
    # installs (stop at the next safe point, a second one exits at once).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    code = _native.cli(["fhir2parquet", *sys.argv[1:]])
    sys.exit(code)


if __name__ == "__main__":
    main()
