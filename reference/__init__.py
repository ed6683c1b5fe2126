"""The NumPy reference trainer (DESIGN §8), installed as ``precisionlab.reference``.

Not built yet: see the trainer issue.
"""
