"""The training application: a character-level language model on rnnkit's cells.

``python -m rnnkit train`` trains it (``train.py``), ``python -m rnnkit sample`` writes text
with it (``sample.py``). The library knows nothing of this package.
"""
