"""The tiers of checks, one module each, all with the same two functions:

- ``collect(student, job) -> Collected`` runs the student's code (in the child process);
- ``judge(job, collected, truth) -> Verdict`` decides, in the trusted process.
"""

from . import compare, embedding, logits, mapping, shapes

TIERS = (mapping, shapes, embedding, logits, compare)
TIER_NAMES = tuple(t.NAME for t in TIERS)
BY_NAME = {t.NAME: t for t in TIERS}
