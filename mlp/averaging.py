"""The mean of the weights over a run's last epochs (``python -m mlp.train --average-epochs K``).

With K of a run's E epochs averaged, the model the run ends with is::

    w̄ = (1/K) Σ_{e = E−K+1}^{E} w_e

where w_e holds every weight and bias after epoch e. This is Polyak–Ruppert
averaging taken once per epoch, as stochastic weight averaging does (Izmailov
et al. 2018, "Averaging Weights Leads to Wider Optima and Better
Generalization"): the late epochs of SGD wander around a minimum, and their
mean lies nearer its centre than any one of them. It is still one plain
network with one forward pass at prediction, the mean of the weights and not
an ensemble of the epochs' predictions; and it needs no batch-norm statistics
recomputed, since an MLP has none.

The sum is kept in float64 (so that the order of the additions, fixed by the
epochs, is the only rounding besides the final division and the cast back to
the network's dtype) and goes into the checkpoint with the number of epochs
summed, so that a resumed run ends with the same bits as one never stopped.
"""

import numpy as np


class EpochAverage:
    """Running sum of ``net``'s parameters after each of the last ``k`` of ``epochs`` epochs."""

    def __init__(self, k, epochs):
        k, epochs = int(k), int(epochs)
        if not 1 <= k <= epochs:
            raise ValueError(f"the average needs 1 <= K <= epochs, got K={k} of {epochs} epochs")
        self.k = k
        self.epochs = epochs
        self.sums = None     # float64 arrays in the order of net.params(), once an epoch is in
        self.count = 0       # epochs summed so far

    @property
    def first_epoch(self):
        """The first epoch (1-based) of the average: E − K + 1."""
        return self.epochs - self.k + 1

    def add(self, net, epoch):
        """Add ``net``'s parameters after epoch ``epoch`` (1-based) if that epoch is averaged."""
        if not self.first_epoch <= epoch <= self.epochs:
            return
        if self.sums is None:
            self.sums = [np.zeros(p.shape, dtype=np.float64) for p in net.params()]
        for s, p in zip(self.sums, net.params()):
            s += p
        self.count += 1

    @property
    def complete(self):
        """Whether all K epochs have been summed."""
        return self.count == self.k

    def apply(self, net):
        """Set ``net``'s parameters to the mean of the epochs summed (each cast to its dtype)."""
        if not self.count:
            raise ValueError("no epoch has been averaged yet")
        for p, s in zip(net.params(), self.sums):
            p[...] = s / self.count

    def state(self):
        """What a checkpoint records besides :attr:`sums` (plain data)."""
        return {"k": self.k, "epochs": self.epochs, "first_epoch": self.first_epoch,
                "count": self.count}

    def load_state(self, state, sums, epochs_done):
        """Restore a checkpoint's ``state`` and ``sums`` after ``epochs_done`` finished epochs.

        A run resumed with another ``--epochs`` moves the window of the last K
        epochs. If the window now starts after the epochs already done, the
        checkpoint's sum is dropped (those epochs are no longer averaged); if it
        starts at or before them, the weights of the epochs it takes in were not
        all kept, no average can be formed, and a ValueError says so.
        """
        if int(state["k"]) != self.k:
            raise ValueError(f"the checkpoint averages {state['k']} epochs, this run {self.k}")
        if int(state["epochs"]) != self.epochs:
            if self.first_epoch > epochs_done:
                self.sums, self.count = None, 0          # the window lies ahead: start afresh
                return
            raise ValueError(
                f"the run averages the weights of its last {self.k} of {state['epochs']} epochs "
                f"and has trained {epochs_done}; the last {self.k} of {self.epochs} epochs would "
                f"start at epoch {self.first_epoch}, whose weights were not kept. Resume with "
                f"--epochs {state['epochs']}, or at least {epochs_done + self.k}")
        count = int(state["count"])
        if count and (sums is None or len(sums) == 0):
            raise ValueError("the checkpoint has summed epochs but holds no sums")
        self.count = count
        self.sums = [np.array(s, dtype=np.float64) for s in sums] if count else None
