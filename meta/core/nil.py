"""NIL (No Inner Loop): classify queries by their penultimate features alone, with no head.

Raghu et al. 2020, section 5: for a task, compute the penultimate-layer features ``f`` of the
support and query examples; each query ``q`` gets the Matching-Networks (Vinyals et al. 2016,
eq. 1-2) prediction, an attention over the support set given by a softmax of cosine
similarities::

    a(q, s_i) = exp(cos(f(q), f(s_i))) / sum_j exp(cos(f(q), f(s_j)))
    p(y | q)  = sum_i a(q, s_i) * onehot(y_i)[y]

NIL-testing reports the accuracy of ``argmax_y p(y | q)``; NIL training (section 5.2) trains the
body on the loss ``-log p(y_q | q)`` of the query set.

Batch norm with batch statistics: the support set and the query set are two separate forward
passes (as in the inner loop and in the original MAML code, where the support and query inputs
are never concatenated), so a query's features never depend on the support set's statistics or
vice versa.

Imports: nothing of :mod:`meta` (torch only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def nil_log_probs(support_features: Tensor, support_y: Tensor, query_features: Tensor, ways: int) -> Tensor:
    """``log p(y | q)`` of the module docstring.

    Args:
        support_features: ``(..., n_s, d)``.
        support_y: ``(..., n_s)`` int64 labels in ``0 .. ways-1``.
        query_features: ``(..., n_q, d)`` (leading dimensions shared with the support, e.g. tasks).
        ways: number of classes.

    Returns:
        ``(..., n_q, ways)`` log-probabilities (``-inf`` for a class with no support example).
    """
    if support_features.shape[-1] != query_features.shape[-1]:
        raise ValueError(
            f"support features have {support_features.shape[-1]} dimensions, query features {query_features.shape[-1]}"
        )
    if support_y.shape != support_features.shape[:-1]:
        raise ValueError(
            f"support_y {tuple(support_y.shape)} does not match support features {tuple(support_features.shape)}"
        )
    cosine = F.normalize(query_features, dim=-1) @ F.normalize(support_features, dim=-1).transpose(-1, -2)
    log_attention = torch.log_softmax(cosine, dim=-1)  # (..., n_q, n_s)
    onehot = F.one_hot(support_y, ways).to(cosine.dtype)  # (..., n_s, ways)
    log_mask = torch.log(onehot).transpose(-1, -2).unsqueeze(-3)  # (..., 1, ways, n_s), 0 or -inf
    return torch.logsumexp(log_attention.unsqueeze(-2) + log_mask, dim=-1)


def nil_loss(support_features: Tensor, support_y: Tensor, query_features: Tensor, query_y: Tensor, ways: int) -> Tensor:
    """Mean ``-log p(y_q | q)`` over the queries (and any leading dimensions): NIL training."""
    log_probs = nil_log_probs(support_features, support_y, query_features, ways)
    return F.nll_loss(log_probs.reshape(-1, ways), query_y.reshape(-1))


def nil_predictions(support_features: Tensor, support_y: Tensor, query_features: Tensor, ways: int) -> Tensor:
    """``argmax_y p(y | q)`` for every query: ``(..., n_q)`` int64."""
    return nil_log_probs(support_features, support_y, query_features, ways).argmax(dim=-1)


def nil_accuracy(model: nn.Module, episode) -> float:
    """NIL-testing accuracy of ``model`` on one task.

    ``model.features`` gives penultimate features (e.g. :meth:`meta.core.models.Conv4.features`); the
    support set and the query set are separate forward passes. ``episode`` has ``support_x``
    ``(N*K, C, H, W)``, ``support_y`` ``(N*K,)``, ``query_x``, ``query_y``.
    """
    ways = int(episode.support_y.max()) + 1
    with torch.no_grad():
        support = model.features(episode.support_x)
        query = model.features(episode.query_x)
        predicted = nil_predictions(support, episode.support_y, query, ways)
    return float((predicted == episode.query_y).double().mean())
