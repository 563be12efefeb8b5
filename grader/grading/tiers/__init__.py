"""The tiers of checks, one module each, every one with the same signature:

``run(session, deadline) -> Verdict``: it asks the student processes for what it needs
(through ``session``), and judges on the trusted side. The order is this tuple's.
"""

from . import compare, embedding, generate, intermediate, logits, mapping, shapes, weights

TIERS = (mapping, shapes, embedding, logits, compare, intermediate, weights, generate)
TIER_NAMES = tuple(t.NAME for t in TIERS)
BY_NAME = {t.NAME: t for t in TIERS}
