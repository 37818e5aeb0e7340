"""The import path of ``InputFrame`` in model artifacts stored before pgmlops 0.2.

skops files name each type by its module; artifacts registered before the package was split by
capability name ``pgmlops._algorithms.InputFrame``. They stay loadable through this alias.
"""

from __future__ import annotations

from pgmlops.training._algorithms import InputFrame

__all__ = ["InputFrame"]
