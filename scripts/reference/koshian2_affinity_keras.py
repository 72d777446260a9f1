"""The affinity-loss reimplementation's MNIST experiment (github.com/koshian2/affinity-loss, commit
c678c3c; files ``affinity_loss.py``, ``cnn_mnist_affinity.py``, ``cnn_mnist_softmax.py``, ``datasets.py``)
ported line by line to Keras 3, as a reference to compare ``experiment=affinity_mnist`` against. It is not
part of the package: it imports nothing from it, and needs ``pip install keras`` (Keras 3) beside it.

    KERAS_BACKEND=torch OMP_NUM_THREADS=1 python scripts/reference/koshian2_affinity_keras.py \\
        --indices "outputs/<run>/subset_indices.npz" --data /work/shared/data --epochs 5 --out affinity.json

What is the source's, unchanged: the model (Conv2D(+bias, glorot_uniform) -> BatchNormalization -> ReLU
stages, 2x2 average pooling, global average pooling, BatchNormalization, ``ClusteringAffinity(10, m, 10.0)``;
``--loss softmax``: ``Dense(10, softmax)`` on the pooled features, no BatchNormalization), the layer's
centres ``W`` (C, m, D) with ``he_normal`` and its regulariser, ``affinity_loss(0.75)`` (per sample
L_mm + R, averaged over the batch by Keras), Adam with Keras' defaults (lr 1e-3, eps 1e-7) ÷5 at epochs
50 and 80, batch 128 with Keras' shuffle and the last incomplete batch trained on, no augmentation, inputs
x / 255 only, BatchNormalization's Keras defaults (momentum 0.99, eps 1e-3), evaluation in inference mode
(moving statistics) after every epoch: test macro F1 of argmax over the first 10 outputs (``F1Callback``).

What differs from the source, on purpose: the kept images are those of one of our runs (``--indices``, a run
folder's ``subset_indices.npz``: ``train`` and ``test`` are sorted indices into the MNIST training and test
sets), not the source's first 6n / n per even digit (``--source-subset`` takes those instead); MNIST comes
from our offline mirror (``<data>/mnist_{train,test}.npz``, bit-exact); Keras 3 (its torch backend) instead
of Keras 2 on TensorFlow 1 (``tf.matrix_band_part`` is ``ops.triu``/``ops.tril``); ``validation_data`` is
left out (it only reports the test loss); the per-epoch record adds the training loss and the even digits'
test recall (scikit-learn's ``f1_score`` / ``recall_score``), written to ``--out`` after every epoch.

Options that move one setting towards ``imbalance_lab`` (for bisection; the defaults are the source's):
``--standardize`` (inputs (x − mean) / std of the training images), ``--adam-eps``, ``--bn-momentum`` (Keras'
meaning: weight of the old moving average), ``--bn-eps``, ``--no-conv-bias``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

EVEN = [0, 2, 4, 6, 8]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--indices", type=Path, help="a run folder's subset_indices.npz (train/test indices)")
    p.add_argument("--source-subset", type=int, metavar="N",
                   help="the source's own selection instead: first 6N / N images of each even digit")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("IMBALANCE_LAB_DATA", "/work/shared/data")))
    p.add_argument("--loss", choices=("affinity", "softmax"), default="affinity")
    p.add_argument("--centers", type=int, default=1, help="m, centres per class (the source: 1 and 5)")
    p.add_argument("--sigma", type=float, default=10.0)
    p.add_argument("--lambd", type=float, default=0.75)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--standardize", action="store_true", help="(x − mean) / std instead of x only in [0, 1]")
    p.add_argument("--adam-eps", type=float, default=1e-7)
    p.add_argument("--bn-momentum", type=float, default=0.99)
    p.add_argument("--bn-eps", type=float, default=1e-3)
    p.add_argument("--no-conv-bias", action="store_true")
    p.add_argument("--out", type=Path, required=True, help="JSON file: the arguments and one record per epoch")
    args = p.parse_args()
    if (args.indices is None) == (args.source_subset is None):
        p.error("give exactly one of --indices and --source-subset")
    return args


args = parse_args()
os.environ.setdefault("KERAS_BACKEND", "torch")
if os.environ["KERAS_BACKEND"] == "torch":
    import torch

    torch.set_num_threads(args.threads)

import keras  # after the backend is chosen
from keras import layers, ops
from keras.callbacks import Callback, LearningRateScheduler
from keras.models import Model
from sklearn.metrics import f1_score, recall_score


# ----------------------------------------------------------------------------- datasets.py
def load_mnist(root: Path):
    train, test = (np.load(root / f"mnist_{s}.npz", allow_pickle=False) for s in ("train", "test"))
    return (train["images"], train["labels"]), (test["images"], test["labels"])


def source_filters(y: np.ndarray, n: int) -> np.ndarray:
    """``inbalanced_mnist``'s mask: every odd digit, the first n of each even digit (source order)."""
    filters = np.zeros(y.shape[0], dtype=bool)
    for i in range(10):
        current_filters = y == i
        if i % 2 == 0:
            current_filters = np.logical_and(current_filters, np.cumsum(current_filters) <= n)
        filters = np.logical_or(filters, current_filters)
    return filters


def inbalanced_mnist(root: Path, indices: Path | None, inbalance_size: int | None):
    (X_train, y_train), (X_test, y_test) = load_mnist(root)
    if indices is not None:
        kept = np.load(indices)
        train_idx, test_idx = kept["train"], kept["test"]
    else:
        train_idx = np.flatnonzero(source_filters(y_train, inbalance_size * 6))
        test_idx = np.flatnonzero(source_filters(y_test, inbalance_size))
    X_train, y_train = X_train[train_idx], y_train[train_idx]
    X_test, y_test = X_test[test_idx], y_test[test_idx]

    X_train, X_test = np.expand_dims(X_train / 255.0, axis=-1), np.expand_dims(X_test / 255.0, axis=-1)
    if args.standardize:
        mean, std = X_train.mean(), X_train.std()
        X_train, X_test = (X_train - mean) / std, (X_test - mean) / std
    y_train, y_test = keras.utils.to_categorical(y_train, 10), keras.utils.to_categorical(y_test, 10)

    # dummy for regularization term
    dummy_train, dummy_test = np.zeros((X_train.shape[0], 1), dtype=np.float32), np.zeros((X_test.shape[0], 1),
                                                                                          dtype=np.float32)
    y_train = np.concatenate([y_train, dummy_train], axis=-1)
    y_test = np.concatenate([y_test, dummy_test], axis=-1)

    return (X_train.astype(np.float32), y_train), (X_test.astype(np.float32), y_test)


# ----------------------------------------------------------------------------- affinity_loss.py
class ClusteringAffinity(layers.Layer):
    def __init__(self, n_classes, n_centers, sigma, **kwargs):
        self.n_classes = n_classes
        self.n_centers = n_centers
        self.sigma = sigma
        super().__init__(**kwargs)

    def build(self, input_shape):
        # batch_size = N, n_classes = C, n_latent_dims = h, centers = m
        # center(W) = (C, m, h)
        # input(f) = (N, h)
        self.W = self.add_weight(name="W", shape=(self.n_classes, self.n_centers, input_shape[1]),
                                 initializer="he_normal", trainable=True)

        super().build(input_shape)

    def upper_triangle(self, matrix):
        upper = ops.triu(matrix)  # tf.matrix_band_part(matrix, 0, -1)
        diagonal = ops.tril(ops.triu(matrix))  # tf.matrix_band_part(matrix, 0, 0)
        diagonal_mask = ops.sign(ops.abs(diagonal))
        return upper * (1.0 - diagonal_mask)

    def call(self, f):
        # Euclidean space similarity measure
        # calculate d(f_i, w_j)
        f_expand = ops.expand_dims(ops.expand_dims(f, axis=1), axis=1)
        w_expand = ops.expand_dims(self.W, axis=0)
        fw_norm = ops.sum((f_expand - w_expand) ** 2, axis=-1)
        distance = ops.exp(-fw_norm / self.sigma)
        distance = ops.max(distance, axis=-1)  # (N,C,m)->(N,C)

        # Regularization
        hidden_layers = self.W.shape[2]
        mc = self.n_classes * self.n_centers
        w_reshape = ops.reshape(self.W, [mc, hidden_layers])
        w_reshape_expand1 = ops.expand_dims(w_reshape, axis=0)
        w_reshape_expand2 = ops.expand_dims(w_reshape, axis=1)
        w_norm_mat = ops.sum((w_reshape_expand2 - w_reshape_expand1) ** 2, axis=-1)
        w_norm_upper = self.upper_triangle(w_norm_mat)
        mu = 2.0 / (mc ** 2 - mc) * ops.sum(w_norm_upper)
        residuals = self.upper_triangle((w_norm_upper - mu) ** 2)
        rw = 2.0 / (mc ** 2 - mc) * ops.sum(residuals)

        batch_size = ops.shape(f)[0]
        rw_broadcast = ops.ones((batch_size, 1)) * rw

        # outputs distance(N, C) + rw(N,)
        output = ops.concatenate([distance, rw_broadcast], axis=-1)
        return output

    def compute_output_shape(self, input_shape):
        # To calculate the regularization term, output n_dimensions is 1 more; ignore it at predict time
        return (input_shape[0], self.n_classes + 1)


def affinity_loss(lambd):
    def loss(y_true_plusone, y_pred_plusone):
        # true
        onehot = y_true_plusone[:, :-1]
        # pred
        distance = y_pred_plusone[:, :-1]
        rw = ops.mean(y_pred_plusone[:, -1])

        # L_mm
        d_fi_wyi = ops.sum(onehot * distance, axis=-1, keepdims=True)
        losses = ops.maximum(lambd + distance - d_fi_wyi, 0.0)
        L_mm = ops.sum(losses * (1.0 - onehot), axis=-1)  # j!=y_i

        return L_mm + rw
    return loss


# ----------------------------------------------------------------------------- cnn_mnist_{affinity,softmax}.py
def conv_bn_relu(input, ch):
    x = layers.Conv2D(ch, 3, padding="same", use_bias=not args.no_conv_bias)(input)
    x = layers.BatchNormalization(momentum=args.bn_momentum, epsilon=args.bn_eps)(x)
    return layers.Activation("relu")(x)


def create_models():
    input = layers.Input((28, 28, 1))
    x = conv_bn_relu(input, 32)
    x = layers.AveragePooling2D(2)(x)
    x = conv_bn_relu(x, 64)
    x = layers.AveragePooling2D(2)(x)
    x = conv_bn_relu(x, 128)
    x = layers.GlobalAveragePooling2D()(x)
    if args.loss == "softmax":
        x = layers.Dense(10, activation="softmax")(x)
    else:
        x = layers.BatchNormalization(momentum=args.bn_momentum, epsilon=args.bn_eps)(x)
        x = ClusteringAffinity(10, args.centers, args.sigma)(x)

    return Model(input, x)


def acc(y_true_plusone, y_pred_plusone):
    y_true = ops.argmax(y_true_plusone[:, :-1], axis=-1)
    y_pred = ops.argmax(y_pred_plusone[:, :-1], axis=-1)
    equals = ops.cast(ops.equal(y_true, y_pred), "float32")
    return ops.mean(equals)


def step_decay(epoch):
    x = 1e-3
    if epoch >= 50:
        x /= 5.0
    if epoch >= 80:
        x /= 5.0
    return x


class F1Callback(Callback):
    """The source's F1Callback (macro F1 of argmax over the first 10 outputs after every epoch), recording
    also the epoch's training loss and the even digits' recall, written to ``out`` every epoch."""

    def __init__(self, X_test, y_test, out: Path, header: dict):
        super().__init__()
        self.X_test = X_test
        self.y_test_label = np.argmax(y_test[:, :10], axis=-1)
        self.f1_log = []
        self.out, self.header, self.history = out, header, []
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs):
        y_pred = self.model.predict(self.X_test, verbose=0)[:, :10]
        y_pred_label = np.argmax(y_pred, axis=-1)
        f1 = f1_score(self.y_test_label, y_pred_label, average="macro")
        self.f1_log.append(f1)
        recall = recall_score(self.y_test_label, y_pred_label, labels=list(range(10)), average=None,
                              zero_division=0)
        record = {"epoch": epoch + 1, "loss": float(logs["loss"]), "lr": step_decay(epoch),
                  "test_macro_f1": float(f1), "minority_recall": float(np.mean(recall[EVEN])),
                  "test_recall": [float(r) for r in recall], "seconds": time.perf_counter() - self.t0}
        self.history.append(record)
        print(f"epoch {epoch + 1}: loss {record['loss']:.4f}, test macro F1 {f1:.4f}, "
              f"even-digit recall {record['minority_recall']:.4f}", flush=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.header, "best_test_macro_f1": max(self.f1_log),
                                   "history": self.history}, indent=2))
        tmp.replace(self.out)


def main():
    keras.utils.set_random_seed(args.seed)
    (X_train, y_train), (X_test, y_test) = inbalanced_mnist(args.data, args.indices, args.source_subset)
    if args.loss == "softmax":
        y_train, y_test = y_train[:, :10], y_test[:, :10]
    print(f"train per digit {np.bincount(y_train[:, :10].argmax(1), minlength=10).tolist()}, "
          f"test per digit {np.bincount(y_test[:, :10].argmax(1), minlength=10).tolist()}", flush=True)

    model = create_models()
    optimizer = keras.optimizers.Adam(learning_rate=1e-3, epsilon=args.adam_eps)
    if args.loss == "softmax":
        model.compile(optimizer, "categorical_crossentropy", metrics=["acc"])  # Keras 3: 3rd is loss_weights
    else:
        model.compile(optimizer, affinity_loss(args.lambd), metrics=[acc])

    header = {"script": "scripts/reference/koshian2_affinity_keras.py", "source": "koshian2/affinity-loss@c678c3c",
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "keras": keras.__version__, "backend": keras.backend.backend()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    scheduler = LearningRateScheduler(step_decay)
    f1 = F1Callback(X_test, y_test, args.out, header)

    model.fit(X_train, y_train, callbacks=[scheduler, f1], batch_size=args.batch_size, epochs=args.epochs,
              verbose=0)
    print(f"max test macro F1 {max(f1.f1_log):.4f}", flush=True)


if __name__ == "__main__":
    main()
