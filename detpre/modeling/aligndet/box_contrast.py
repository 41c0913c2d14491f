"""
The box-level contrastive loss of AlignDet (Li et al., ICCV 2023): online embeddings of RoIs of
one view against target (EMA) embeddings of RoIs of the other view that carry the same proposal id,
every RoI of another id in both views being a negative.
"""

import torch
import torch.nn.functional as F

from ..ssl.precision import float32_outside_autocast

__all__ = ["box_id_contrast"]


@float32_outside_autocast
def box_id_contrast(q, q_ids, k, k_ids, temperature, negatives=None):
    """
    For each proposal id ``l`` among the queries: every (query, key) pair of id ``l`` is a
    positive, with logits ``[q.k, q.n_1, ..., q.n_M] / T`` and cross-entropy against the positive,
    the negatives being all queries and keys of other ids. The loss of id ``l`` is the mean over
    its ``m_l x n_l`` pairs and the total the mean over ids. An id without key uses its own
    queries (detached) as keys, as the release does. Negatives and keys take no gradient.

    Args:
        q (Tensor): (Nq, D) online embeddings (any scale; L2-normalised here).
        q_ids (Tensor): (Nq,) int64 proposal ids of the queries.
        k (Tensor): (Nk, D) target embeddings of the other view.
        k_ids (Tensor): (Nk,) int64 proposal ids of the keys.
        temperature (float): T > 0.
        negatives (Tensor or None): (M, D) more negatives of every query, without id (the
            background anchors AlignDet's RetinaNet samples, of both views); no gradient.

    Returns:
        tuple[Tensor, Tensor]: the loss (scalar; 0 with a graph when there is no query) and the
        top-1 accuracy (the fraction of queries whose best key of their id scores above every
        negative).
    """
    if q.dim() != 2 or k.dim() != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(
            f"q and k must be (N, D) with one D, got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    if q_ids.shape != q.shape[:1] or k_ids.shape != k.shape[:1]:
        raise ValueError("q_ids and k_ids must have one id per embedding")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if len(q) == 0:
        return q.sum() * 0.0, q.new_zeros(())
    q = F.normalize(q.float(), dim=1)
    q_const = q.detach()
    k = F.normalize(k.detach().float(), dim=1)
    s_qk = q @ k.t() / temperature
    s_qq = q @ q_const.t() / temperature
    same_k = q_ids[:, None] == k_ids[None, :]
    same_q = q_ids[:, None] == q_ids[None, :]
    neg = [s_qq.masked_fill(same_q, -torch.inf), s_qk.masked_fill(same_k, -torch.inf)]
    if negatives is not None and len(negatives):
        if negatives.dim() != 2 or negatives.shape[1] != q.shape[1]:
            raise ValueError(f"negatives must be (M, {q.shape[1]}), got {tuple(negatives.shape)}")
        neg.append(q @ F.normalize(negatives.detach().float(), dim=1).t() / temperature)
    neg = torch.cat(neg, 1)
    neg_lse = torch.logsumexp(neg, dim=1, keepdim=True)  # -inf without negatives

    # Pair loss -log(e^s / (e^s + sum_neg e^n)) = softplus(lse_neg - s).
    has_key = same_k.any(dim=1, keepdim=True)
    pos_k = same_k & has_key
    pos_q = same_q & ~has_key
    pair_k = torch.where(pos_k, F.softplus(neg_lse - s_qk), torch.zeros_like(s_qk))
    pair_q = torch.where(pos_q, F.softplus(neg_lse - s_qq), torch.zeros_like(s_qq))
    num_keys = pos_k.sum(1) + pos_q.sum(1)  # n_l for the query's id
    num_queries = same_q.sum(1)  # m_l
    per_query = (pair_k.sum(1) + pair_q.sum(1)) / (num_keys * num_queries)
    num_ids = torch.unique(q_ids).numel()
    loss = per_query.sum() / num_ids

    with torch.no_grad():
        pos = torch.cat(
            [s_qk.masked_fill(~pos_k, -torch.inf), s_qq.masked_fill(~pos_q, -torch.inf)], 1
        )
        best_pos = pos.amax(1)
        acc = (best_pos > neg.amax(1)).float().mean()
    return loss, acc
