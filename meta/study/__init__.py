"""The reproduction of "Rapid Learning or Feature Reuse?" (``python -m meta reproduce`` and
``python -m meta report``), one concern per module:

- :mod:`meta.study.presets`: the presets (settings, seeds, budgets) as data;
- :mod:`meta.study.plan`: a preset resolved into runs for an output folder, and job costs;
- :mod:`meta.study.jobs`: the worker jobs (train, evaluate, snapshot, similarity);
- :mod:`meta.study.aggregate`: per-seed results -> the rows of each CSV;
- :mod:`meta.study.stages`: the stages, their job lists and what each writes;
- :mod:`meta.study.executor`: running a stage's jobs here or in worker processes;
- :mod:`meta.study.folder`: ``preset.json``, the output-folder and data checks, stage markers;
- :mod:`meta.study.pipeline`: :func:`~meta.study.pipeline.reproduce`, the whole study;
- :mod:`meta.study.schema`: every CSV's name, columns and place, written and read back;
- :mod:`meta.study.paper`: the paper's numbers and their provenance;
- :mod:`meta.study.comparison`: ours beside the paper's, as display tables;
- :mod:`meta.study.findings`: verdicts on the paper's qualitative findings;
- :mod:`meta.study.figures`: the figures (drawing only);
- :mod:`meta.study.report`: Markdown tables and the self-contained ``report.html``.

Imports: nothing (importing ``meta.study`` loads none of its modules).
"""
