"""TEMPORARY in branch house: stands in for house-faces' faces.py until the merge."""

from utils import chw_to_hwc, make_grid, save_png, to_uint8  # noqa: F401

SIZE = 64
