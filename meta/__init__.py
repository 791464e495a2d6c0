"""meta: few-shot meta-learning (MAML, first-order MAML, ANIL, NIL) on conv4, with adaptation
snapshots for representational-similarity analysis.

The rooms, in the direction of imports (``tests/test_architecture.py`` checks it):

- :mod:`meta.data`: the data sets and episodes (imports nothing else of ``meta``);
- :mod:`meta.core`: the math: conv4, the one inner loop, the meta-gradient's execution paths,
  the regimes, NIL (imports only :mod:`meta.data`);
- :mod:`meta.run`: configuration and the paper defaults, training, run folders, evaluation,
  snapshot writing, CPU settings (imports :mod:`meta.core`, :mod:`meta.data` and :mod:`repsim`);
- :mod:`meta.study`: the reproduction of the paper (on top of everything);
- :mod:`meta.cli`: ``python -m meta``, the only command line;
- :mod:`meta.validation`: checks of plain values, a leaf every room may import.

Imports: nothing (importing ``meta`` loads none of its rooms).
"""
