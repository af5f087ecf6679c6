"""Parity and accuracy tests of the default pack's models (they need `facegraph models build`), without Ray."""

from tests.unit.conftest import _no_ray  # noqa: F401  (the same guard: any attempt to start Ray fails the test)
