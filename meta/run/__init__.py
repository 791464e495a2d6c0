"""Running meta-learning: the run configuration and the paper defaults
(:mod:`~meta.run.config`, :mod:`~meta.run.paper_defaults`), training with resumable checkpoints
(:mod:`~meta.run.train`, :mod:`~meta.run.state`, :mod:`~meta.run.folder`), evaluation
(:mod:`~meta.run.evaluate`), adaptation snapshots (:mod:`~meta.run.snapshot_writer`) and the CPU
settings (:mod:`~meta.run.cpu`).

Imports: :mod:`meta.core`, :mod:`meta.data`, :mod:`meta.rl`, :mod:`meta.validation` and
:mod:`repsim`; never :mod:`meta.study` or :mod:`meta.cli`.
"""
