"""The trusted side, in the order data flows: submission, checkpoints and truth, session, tiers, engine, batch.

Nothing here runs student code (that happens only in ``grader.sandbox``'s processes) and
nothing here imports torch: the truth comes from the checkpoint's tensors read with NumPy.
"""
