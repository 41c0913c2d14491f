import numpy as np
import pytest
import torch

from detpre.modeling.ssl import FeatureQueue, QueueBank


class RingBuffer:
    """Independent reference: write keys one at a time at the pointer."""

    def __init__(self, initial):
        self.rows = [row.copy() for row in initial]
        self.ptr = 0

    def push(self, keys):
        for key in keys:
            self.rows[self.ptr] = key / np.linalg.norm(key)
            self.ptr = (self.ptr + 1) % len(self.rows)


def _keys(n, dim, seed):
    return torch.from_numpy(np.random.RandomState(seed).randn(n, dim).astype(np.float32))


def test_initial_state():
    q = FeatureQueue(10, 4)
    assert q.queue.shape == (10, 4) and q.ptr.dtype == torch.long and int(q.ptr) == 0
    assert torch.allclose(q.queue.norm(dim=1), torch.ones(10), atol=1e-6)
    assert set(q.state_dict()) == {"queue", "ptr"}


def test_pointer_wraps_when_size_is_not_a_multiple_of_the_batch():
    q = FeatureQueue(10, 4)
    ptrs = []
    for i in range(6):
        q.enqueue(_keys(4, 4, i))
        ptrs.append(int(q.ptr))
    assert ptrs == [4, 8, 2, 6, 0, 4]


@pytest.mark.parametrize("batches", [[3, 4, 7, 1, 5, 9], [10, 2, 13, 25, 4]])
def test_contents_match_ring_buffer(batches):
    q = FeatureQueue(10, 5)
    ref = RingBuffer(q.queue.numpy())
    for i, n in enumerate(batches):
        keys = _keys(n, 5, 100 + i) * 3.0  # not normalised: the queue normalises
        q.enqueue(keys)
        ref.push(keys.numpy())
        np.testing.assert_allclose(q.queue.numpy(), np.stack(ref.rows), rtol=1e-5, atol=1e-6)
        assert int(q.ptr) == ref.ptr


def test_bad_key_shape():
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        FeatureQueue(8, 4).enqueue(torch.randn(2, 3))
    with pytest.raises(ValueError):
        FeatureQueue(0, 4)


def test_levels_are_independent():
    torch.manual_seed(0)
    bank = QueueBank(["p2", "p3", "p4"], 7, 3)
    refs = {level: RingBuffer(bank[level].queue.numpy()) for level in bank}
    assert bank["p2"].queue.data_ptr() != bank["p3"].queue.data_ptr()
    for step, n in enumerate([2, 5, 4]):
        keys = {level: _keys(n, 3, 10 * step + j) for j, level in enumerate(bank)}
        bank.enqueue(keys)
        for level in bank:
            refs[level].push(keys[level].numpy())
    for level in bank:
        np.testing.assert_allclose(bank[level].queue.numpy(), np.stack(refs[level].rows), atol=1e-6)
        assert int(bank[level].ptr) == 11 % 7
    assert not torch.allclose(bank["p2"].queue, bank["p3"].queue)
    with pytest.raises(KeyError, match="p4"):
        bank.enqueue({"p2": _keys(1, 3, 0), "p3": _keys(1, 3, 0)})


def test_state_dict_round_trip():
    bank = QueueBank(["p2", "p5"], 6, 4)
    bank.enqueue({"p2": _keys(4, 4, 1), "p5": _keys(4, 4, 2)})
    bank.enqueue({"p2": _keys(3, 4, 3), "p5": _keys(3, 4, 4)})
    state = bank.state_dict()
    assert set(state) == {"p2.queue", "p2.ptr", "p5.queue", "p5.ptr"}
    restored = QueueBank(["p2", "p5"], 6, 4)
    restored.load_state_dict(state)
    for level in ("p2", "p5"):
        assert torch.equal(restored[level].queue, bank[level].queue)
        assert int(restored[level].ptr) == int(bank[level].ptr) == 1
    more = {"p2": _keys(5, 4, 5), "p5": _keys(5, 4, 6)}
    bank.enqueue(more)
    restored.enqueue(more)
    for level in ("p2", "p5"):
        assert torch.equal(restored[level].queue, bank[level].queue)
