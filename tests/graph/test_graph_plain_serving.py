"""The whole-graph tests again with Ray Serve's own defaults (``facegraph serve --serving plain``).

The suite runs in the default serving mode (``graph.serving``); this module runs ``test_graph``'s
tests once more on a Ray started in the other mode: actor calls between deployments and the Python
proxy in front.
"""

from tests.graph.test_graph import *  # noqa: F401,F403  (the tests and their module settings)

SERVING = "plain"


def test_rays_python_proxy_answers_and_no_haproxy_runs(serve_app):
    from tests.graph.conftest import listeners

    base, _ = serve_app
    port = int(base.rsplit(":", 1)[1])
    owners = {command for _, listening, _, command in listeners() if listening == port}
    assert owners and all("ProxyActor" in command for command in owners), owners
    assert not [entry for entry in listeners() if "haproxy" in entry[3]]
