"""PNG grids for the runtime: ``vaezoo.images`` needs only numpy and zlib, so the runtime reuses it."""

from vaezoo.images import encode_png
from vaezoo.images import save_grid as save_grid_png

__all__ = ["encode_png", "save_grid_png"]
