"""The tiers of checks, one module each, every one with the same signature:

``run(session, deadline) -> Verdict``: it asks the student processes for what it needs
(through ``session``), and judges on the trusted side. The report's order is ``TIERS``.

How they run: each process's ``LANES`` side by side, each lane in its order. The torch lane
begins with ``LOADS``, which builds and loads the models the other tiers use; the torch-free
lane starts as soon as the primary checkpoint is loaded, while the second one loads. The
mapping tier, on synthetic tensors of its own, needs no loaded model: it runs last in the
torch lane, while the torch-free lane is still busy with the forward passes.
"""

from . import compare, embedding, generate, intermediate, logits, mapping, shapes, weights

TIERS = (mapping, shapes, embedding, logits, compare, intermediate, weights, generate)
TIER_NAMES = tuple(t.NAME for t in TIERS)
BY_NAME = {t.NAME: t for t in TIERS}
LOADS = shapes
LANES = {"numpy": (embedding, logits, generate), "torch": (shapes, compare, intermediate, weights, mapping)}
