"""The checks shared by the grader and the students' public tests (one import name on both sides).

Nothing here knows the answers: attribute paths and shapes (the interface), the
tolerance, the checkpoint recipe, the notebook runner and the wording of feedback.
What each attribute must hold lives only in the grader (``grader/grading/answers.py``).
The student template carries a generated copy of this package.
"""
