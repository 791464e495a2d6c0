"""The math of meta-learning, apart from any orchestration: conv4 (:mod:`~meta.core.models`), the
one inner loop (:mod:`~meta.core.inner`), the meta-gradient and its execution paths
(:mod:`~meta.core.paths`, :mod:`~meta.core.compiled`, :mod:`~meta.core.convolution`), the
training regimes (:mod:`~meta.core.regimes`), the test procedures (:mod:`~meta.core.procedures`),
NIL (:mod:`~meta.core.nil`) and the vocabulary (:mod:`~meta.core.names`).

Imports: :mod:`meta.data` and :mod:`meta.validation` only (no files, no command line, no
:mod:`repsim`).
"""
