"""The checks of Lab 04, shared by the grader and the students' public tests.

Everything in this package uses only NumPy, torch and transformers and
imports its siblings relatively, so that ``grade template build`` can copy it
verbatim into the student template: one definition of each check, no drift.
"""
