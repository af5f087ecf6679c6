"""The Ray-free core that both front ends run: the Serve graph (``deployments/``, ``graph/ingress.py``)
and the bulk job (``graph/batch/``).

- :mod:`graph.core.stages`: loading a stage's model on the resources a process was given, the
  embedding space of a recognizer, which model answered, the stage-call interface.
- :mod:`graph.core.wire`: what the stages hand each other.
- :mod:`graph.core.analysis`: detect, then the branches; the typed per-branch outcomes and the answer.
- :mod:`graph.core.identities`: the identity policy (eye-distance floor, thresholds, decisions) and
  the gallery operations.

Nothing here imports Ray, Serve or the HTTP layer; failures are ``models.errors.FacegraphError``
with a code, which the one error boundary (``graph.errors``) turns into HTTP statuses.
"""
