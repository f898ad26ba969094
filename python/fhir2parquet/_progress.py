"""Progress bars for long runs: tqdm's (a widget in Jupyter, a bar in a terminal) when tqdm is
installed, else a line on stderr in a terminal; none when the output is not interactive."""

import sys
import time
from typing import Callable, Optional, Union


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()  # type: ignore[attr-defined]
    except Exception:
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def interactive() -> bool:
    """Whether progress is shown by default: a terminal on stderr, or a Jupyter kernel."""
    return _in_notebook() or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


class _Bar:
    """Follows ``(read_bytes, total_bytes, resources)`` reports of a run."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar = None
        self.last_line = 0.0
        try:
            from tqdm.auto import tqdm  # type: ignore[import-not-found]

            self.tqdm = tqdm
        except ImportError:
            self.tqdm = None

    def __call__(self, read: int, total: int, resources: int) -> None:
        if self.tqdm is not None:
            if self.bar is None:
                self.bar = self.tqdm(
                    total=total or None,
                    unit="B",
                    unit_scale=True,
                    desc=self.description,
                    leave=False,
                )
            self.bar.n = read
            self.bar.set_postfix_str(f"{resources:,} resources", refresh=False)
            self.bar.refresh()
            return
        now = time.monotonic()
        if now - self.last_line >= 0.5:
            self.last_line = now
            share = f"{100 * read / total:5.1f}% " if total else ""
            sys.stderr.write(
                f"\r{self.description}: {share}{read / 1e6:,.1f} MB, {resources:,} resources"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.last_line:
            sys.stderr.write("\n")


def make(
    progress: Union[None, bool, Callable[[int, int, int], None]], description: str
) -> Optional[Callable[[int, int, int], None]]:
    """The callback for ``progress``: None (shown when interactive), True, False, or a
    function of ``(read_bytes, total_bytes, resources)``."""
    if callable(progress):
        return progress
    if progress is None:
        progress = interactive()
    return _Bar(description) if progress else None
