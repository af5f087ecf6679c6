"""Unit tests run without Ray: any attempt to start it fails the test."""

import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch):
    try:
        import ray
    except ImportError:
        return

    def forbidden(*args, **kwargs):
        raise AssertionError("unit tests must not start Ray")

    monkeypatch.setattr(ray, "init", forbidden)


@pytest.fixture
def store(tmp_path):
    """An embedded (SQLite) gallery store in the test's own folder."""
    from facegraph.graph.identity.store import GalleryStore

    s = GalleryStore(tmp_path / "gallery.sqlite3")
    yield s
    s.close()
