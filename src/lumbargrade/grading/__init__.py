"""Grading: the interpretable decision tree on a dural-sac-to-disc ratio (:mod:`.tree`) and CNN patch
classifiers (``classifiers*`` modules).

Kept free of imports so that ``import lumbargrade.grading`` is cheap; import the submodules directly.
"""
