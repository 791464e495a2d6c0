"""meta: few-shot meta-learning (MAML, first-order MAML, ANIL, NIL) on conv4, with adaptation
snapshots for representational-similarity analysis."""
