"""A tqdm progress bar that can be switched off, for loops that run with and without a terminal."""

from __future__ import annotations


class NullBar:
    """Accepts a tqdm bar's calls and does nothing, so callers need no ``if bar`` checks."""

    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, *args, **kwargs) -> None: ...
    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...
    def close(self) -> None: ...


def bar(enabled: bool, total: int, initial: int = 0, **tqdm_kwargs):
    """A tqdm bar over ``total`` items starting at ``initial``; a NullBar when not enabled."""
    if not enabled:
        return NullBar()
    # Imported here: tqdm is only needed when a bar is shown.
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, dynamic_ncols=True, **tqdm_kwargs)


__all__ = ["bar", "NullBar"]
