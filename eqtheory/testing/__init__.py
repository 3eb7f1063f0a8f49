"""Public testing helpers: hypothesis strategies that draw instances with known constants.

>>> from eqtheory.testing import strategies
>>> "spd_quadratics" in strategies.__all__
True
"""

from eqtheory.testing import strategies

__all__ = ["strategies"]
