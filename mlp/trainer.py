"""The training loop: epochs of shuffled minibatches, evaluation, divergence checks.

The loop is shared by the command line (:mod:`mlp.train`) and the Python API.
It hands the per-batch work to a backend (:mod:`mlp.backends`) a chunk of
batches at a time, so that a fast backend keeps Python out of the batch loop
while the trainer can still stop cleanly at a batch boundary, report
progress, and catch a loss that turns NaN or infinite.

Determinism: the sample order of epoch e is drawn from
``numpy.random.default_rng([seed, e])``, and dropout's masks are a hash of
(dropout seed, e, position in the order) (:mod:`mlp.dropout`), so both
depend on the seeds and the epoch alone, and a run can be resumed at any batch.
"""

import math
import time

import numpy as np
from tqdm import tqdm

from .batches import Extras, batch_targets
from .errors import DivergenceError

#: a chunk whose mean batch loss is above this multiple of the run's first
#: batch loss has diverged (see Trainer._first_diverged)
DIVERGENCE_FACTOR = 10.0
#: samples in a Trainer's first chunk (unless chunk_size is given)
FIRST_CHUNK_SAMPLES = 4096
#: and the seconds each later chunk aims at (Trainer._update_chunk_size), but never
#: fewer than FIRST_CHUNK_SAMPLES samples unless those would take over MAX_CHUNK_SECONDS
CHUNK_SECONDS = 0.1
MAX_CHUNK_SECONDS = 1.0


def epoch_order(seed, epoch, n):
    """The shuffled sample order of epoch ``epoch`` (0-based) for ``n`` samples."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def evaluate(net, backend, X, y, scale=1.0):
    """Mean loss and accuracy of ``net`` on (X, y); y holds labels or 2-D targets.

    Accuracy compares the output's argmax with the label (or with the
    target's argmax); for a one-output network it thresholds ŷ at 0.5.
    """
    yhat = backend.predict_output(net, X, scale)
    Y = batch_targets(y, slice(None), net.sizes[-1], net.dtype)
    loss = float(net.loss.output_value(yhat, Y))
    if yhat.shape[1] == 1:
        correct = (yhat[:, 0] > 0.5) == (Y[:, 0] > 0.5)
    else:
        correct = yhat.argmax(axis=1) == Y.argmax(axis=1)
    return loss, float(correct.mean())


class Trainer:
    """Runs epochs of minibatch training of ``net`` with ``optimizer`` on ``backend``.

    State that a checkpoint needs: ``epoch`` (epochs finished), ``position``
    (batches finished in the current epoch), ``batch_losses`` of the current
    epoch so far, ``history`` (one dict per finished epoch), and the sums of
    ``average`` (an :class:`mlp.averaging.EpochAverage`, which adds the
    weights after each epoch it averages; the caller applies it at the end).
    """

    def __init__(self, net, optimizer, backend, batch_size=32, seed=0,
                 chunk_size=None, progress=False, log=None,
                 divergence_factor=DIVERGENCE_FACTOR):
        if int(batch_size) < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size!r}")
        self.net = net
        self.optimizer = optimizer
        self.backend = backend
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        # batches per call to the backend: chunk_size if given, else FIRST_CHUNK_SAMPLES
        # at first and then about CHUNK_SECONDS' worth (_update_chunk_size)
        if chunk_size:
            self.chunk_size = chunk_size
        else:
            self._chunk_size = max(1, FIRST_CHUNK_SAMPLES // self.batch_size)
            self._chunk_fixed = False
        self.progress = progress
        self.log = log
        # None: only NaN and infinity count as divergence
        self.divergence_factor = divergence_factor
        self.epoch = 0
        self.position = 0
        self.batch_losses = []
        self.epoch_seconds = 0.0
        self.history = []
        self.compile_seconds = 0.0
        self.initial_loss = None
        self.stop_requested = False
        self.on_chunk = None   # called as on_chunk(trainer) after every chunk of batches
        self.on_epoch = None   # called as on_epoch(trainer) after every finished epoch
        # sample weights and dropout (an mlp.batches.Extras; its scale and epoch are set per call)
        self.extras = Extras()
        # an mlp.averaging.EpochAverage: the weights summed after each of the last epochs
        self.average = None

    def state(self):
        """The loop's position and records as plain data (for a checkpoint)."""
        return {"epoch": self.epoch, "position": self.position,
                "batch_losses": list(self.batch_losses), "epoch_seconds": self.epoch_seconds,
                "history": list(self.history), "compile_seconds": self.compile_seconds,
                "batch_size": self.batch_size, "seed": self.seed,
                "initial_loss": self.initial_loss,
                "average": self.average.state() if self.average else None}

    def load_state(self, state):
        """Restore what :meth:`state` returned (network and optimizer are restored apart)."""
        if int(state["batch_size"]) != self.batch_size or int(state["seed"]) != self.seed:
            raise ValueError("checkpoint was written with another batch size or seed")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.batch_losses = [float(x) for x in state["batch_losses"]]
        self.epoch_seconds = float(state["epoch_seconds"])
        self.history[:] = state["history"]
        self.compile_seconds = float(state["compile_seconds"])
        self.initial_loss = state.get("initial_loss")

    @property
    def chunk_size(self):
        """Batches per call to the backend; setting it fixes it (no more adapting)."""
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, n):
        self._chunk_size = max(1, int(n))
        self._chunk_fixed = True

    def _update_chunk_size(self, seconds, n_batches):
        """Size the next chunk to about :data:`CHUNK_SECONDS` from the last one's seconds per batch.

        A call to the backend costs a fixed share (with threads, waking them;
        the working copies of the weights), so the fewer the calls the better:
        4096 samples a call cost 5-10% of an epoch of the small default nets on
        two threads (docs/performance.md, session 7). A tenth of a second
        still stops promptly and reports progress often. A chunk still has at
        least :data:`FIRST_CHUNK_SAMPLES` samples where those take at most
        :data:`MAX_CHUNK_SECONDS`: for wide nets the fixed share is itself
        about a tenth of a second (784-1024-1024-1024-10: 80 ms a call
        before its copies were tiled), and chunks sized by time alone
        shrank to one batch, an epoch taking 7× as long (docs/performance.md,
        session 9). Chunking changes no result (the same batches in the same
        order); a chunk_size the caller set is kept.
        """
        if self._chunk_fixed or n_batches < 1 or seconds <= 0:
            return
        per_batch = seconds / n_batches
        floor = min(FIRST_CHUNK_SAMPLES // self.batch_size, MAX_CHUNK_SECONDS / per_batch)
        self._chunk_size = max(1, int(max(CHUNK_SECONDS / per_batch, floor)))

    def request_stop(self):
        """Ask the loop to stop at the next batch boundary (safe from a signal handler)."""
        self.stop_requested = True

    def prepare(self, X, y, scale=1.0):
        """Compile the backend's kernels (timed apart from training)."""
        self.optimizer.ensure_state(self.net)
        self.compile_seconds += self.backend.prepare(
            self.net, self.optimizer, X, y, self.batch_size, scale)
        return self.compile_seconds

    def fit(self, X, y, epochs, scale=1.0, X_val=None, y_val=None):
        """Train until ``epochs`` epochs are finished (or a stop is requested).

        Returns True when all epochs finished, False when stopped early.
        Raises :class:`DivergenceError` when a batch loss is NaN or infinite;
        the network is then left as it was before the chunk that diverged.
        """
        n = X.shape[0]
        if n == 0:
            raise ValueError("no training samples: the training set is empty")
        n_batches = math.ceil(n / self.batch_size)
        self.prepare(X, y, scale)
        while self.epoch < epochs:
            order = epoch_order(self.seed, self.epoch, n)
            bar = self._progress_bar(n_batches)
            while self.position < n_batches:
                if self.stop_requested:
                    bar and bar.close()
                    return False
                start = self.position
                stop = min(n_batches, start + self.chunk_size)
                snapshot = [p.copy() for p in self.net.params()]
                velocities = [v.copy() for v in self.optimizer.state_arrays()]
                steps = self.optimizer.t
                t0 = time.perf_counter()
                losses = self.backend.train_batches(
                    self.net, self.optimizer, X, y, order, start, stop, self.batch_size,
                    self.extras._replace(scale=scale, epoch=self.epoch))
                seconds = time.perf_counter() - t0
                self.epoch_seconds += seconds
                self._update_chunk_size(seconds, stop - start)
                if self.initial_loss is None and len(losses):
                    self.initial_loss = float(losses[0])
                bad = self._first_diverged(losses)
                if bad is not None:
                    self._restore(snapshot, velocities)
                    self.optimizer.t = steps
                    self._diverged(losses[bad], start + bad, start, n_batches)
                self.batch_losses.extend(losses.tolist())
                self.position = stop
                if bar:
                    bar.update(stop - start)
                if self.on_chunk:
                    self.on_chunk(self)
            if bar:
                bar.close()
            self._finish_epoch(n, X_val, y_val, scale)
        return True

    def _first_diverged(self, losses):
        """Index of the first batch whose loss is NaN, infinite or exploding, else None.

        Exploding means a chunk whose mean batch loss is more than
        ``divergence_factor`` times the run's first batch loss (or times 1, if
        that was smaller); the step reported is then the chunk's first batch
        above that limit. With bounded gradients (sigmoid and softmax
        saturate) a too-large learning rate makes the loss huge long before
        it makes it infinite, while a brief overshoot of a few batches that
        training recovers from is tolerated.
        """
        bad = ~np.isfinite(losses)
        if self.divergence_factor and not bad.any():
            limit = self.divergence_factor * max(self.initial_loss or 0.0, 1.0)
            if losses.mean() > limit:
                bad = losses > limit
        if not bad.any():
            if all(np.all(np.isfinite(p)) for p in self.net.params()):
                return None
            return len(losses) - 1
        return int(np.flatnonzero(bad)[0])

    def _diverged(self, loss, batch, chunk_start, n_batches):
        step = self.epoch * n_batches + batch + 1
        what = (f"became {loss}" if not np.isfinite(loss) else
                f"rose to {loss:.4g} (its first value was {self.initial_loss:.4g})")
        raise DivergenceError(
            f"training diverged: the loss {what} at step {step} (epoch {self.epoch + 1}, "
            f"batch {batch + 1}) with learning rate {self.optimizer.lr:g}; try a lower rate "
            f"such as --lr {self.optimizer.lr / 10:g}. The model as it was after step "
            f"{self.epoch * n_batches + chunk_start} is kept.")

    def _finish_epoch(self, n, X_val, y_val, scale):
        sizes = np.full(len(self.batch_losses), self.batch_size, dtype=np.float64)
        sizes[-1] = n - self.batch_size * (len(self.batch_losses) - 1)
        record = {
            "epoch": self.epoch + 1,
            "train_loss": float(np.dot(self.batch_losses, sizes) / n),
            "val_loss": None,
            "val_accuracy": None,
            "seconds": self.epoch_seconds,
        }
        if X_val is not None and len(X_val):
            record["val_loss"], record["val_accuracy"] = evaluate(
                self.net, self.backend, X_val, y_val, scale)
        self.history.append(record)
        self.epoch += 1
        if self.average:
            self.average.add(self.net, self.epoch)
        self.position = 0
        self.batch_losses = []
        self.epoch_seconds = 0.0
        if self.log:
            self.log(format_epoch(record))
        if self.on_epoch:
            self.on_epoch(self)

    def _restore(self, params, velocities):
        for p, saved in zip(self.net.params(), params):
            p[...] = saved
        for v, saved in zip(self.optimizer.state_arrays(), velocities):
            v[...] = saved

    def _progress_bar(self, total):
        if not self.progress:
            return None
        return tqdm(total=total, initial=self.position, desc=f"epoch {self.epoch + 1}",
                    unit="batch", leave=False, dynamic_ncols=True)


def format_epoch(record):
    """One line per epoch: epoch, train loss, validation loss and accuracy, seconds."""
    line = f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.4f}"
    if record.get("val_loss") is not None:
        line += f"  val loss {record['val_loss']:.4f}  val acc {record['val_accuracy']:.4f}"
    return line + f"  {record['seconds']:.2f}s"
