"""Evaluation of a fine-tuned regressor on seen (test-b) and unseen (test-c) speakers.

Seen speakers: predictions of the fine-tuned model; PLDC retrieves training speakers
by the fine-tuned model's mean-pooled representations.

Unseen speakers (paper §3.4): no retraining. Speaker vectors from the *original*
encoder (no speaker embedding) for the training speakers and the new speaker; the
most similar training speaker is the proxy whose embedding the fine-tuned model
receives; PLDC then uses training speakers retrieved with those same vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from papt_jax import pldc, progress
from papt_jax.eval.results import EvalResult, speaker_order
from papt_jax.models.hubert import HubertModel, masked_mean
from papt_jax.train.prediction import predict
from papt_jax.train.sharding import data_sharded, replicated, shard_batch

Batches = Callable[[], Iterable[dict[str, np.ndarray]]]


def dense_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique ids, position of each entry in them): ids of any type -> 0..S-1."""
    unique, inverse = np.unique(np.asarray(ids), return_inverse=True)
    return unique, inverse.astype(np.int32)


def make_encode_step(model: HubertModel, mesh: Mesh):
    """Jitted `(params, batch) -> (batch, dim)` mean-pooled encoder output (no speaker)."""
    if model.config.speaker_fusion != "none":
        raise ValueError("the original encoder for unseen speakers must have no speaker table")

    def encode(params, batch):
        out = model.apply({"params": params}, batch["audio"], audio_mask=batch["audio_mask"])
        return masked_mean(out.last_hidden_state, out.frame_mask)

    return jax.jit(
        encode, in_shardings=(replicated(mesh), data_sharded(mesh)), out_shardings=replicated(mesh)
    )


def encode_pooled(
    encode_step, params, batches: Iterable, mesh: Mesh, description: str = "encode"
) -> dict[str, np.ndarray]:
    """Keys, speaker ids and pooled vectors (N, dim) of every real row (progress bar shown)."""
    outputs, keys, speakers, masks = [], [], [], []
    shown = jax.process_index() == 0
    for batch in progress.bar(batches, desc=description, unit="batches", disable=not shown):
        outputs.append(encode_step(params, shard_batch(batch, mesh)))
        keys.append(batch["key"])
        speakers.append(batch["speaker_id"])
        masks.append(batch["example_mask"])
    keep = np.concatenate(masks)
    return {
        "key": np.concatenate(keys)[keep],
        "speaker_id": np.concatenate(speakers)[keep],
        "pooled": np.concatenate(jax.device_get(outputs))[keep],
    }


def with_speakers(batches: Iterable, speaker_of_key: dict[str, int]) -> Iterator[dict]:
    """Replaces each row's speaker index by `speaker_of_key[key]` (proxy speakers)."""
    for batch in batches:
        batch = dict(batch)
        batch["speaker"] = np.asarray(
            [
                speaker_of_key.get(str(k), -1) if m else -1
                for k, m in zip(batch["key"], batch["example_mask"], strict=True)
            ],
            np.int32,
        )
        yield batch


def proxy_speakers(
    train_vecs: np.ndarray,
    train_speaker_index: np.ndarray,
    test_vecs: np.ndarray,
    test_speaker_id: np.ndarray,
) -> dict[str, int]:
    """Nearest training speaker (cosine of speaker means) of every unseen speaker.

    Args:
      train_vecs: (M, D) original-encoder vectors of training utterances.
      train_speaker_index: (M,) their global speaker indices.
      test_vecs: (N, D) original-encoder vectors of unseen-speaker utterances.
      test_speaker_id: (N,) their speaker ids.

    Returns:
      {unseen speaker id: global index of its proxy training speaker}.
    """
    train_unique, train_dense = dense_ids(train_speaker_index)
    test_unique, test_dense = dense_ids(test_speaker_id)
    train_means = pldc.speaker_means(train_vecs, train_dense, len(train_unique))
    test_means = pldc.speaker_means(test_vecs, test_dense, len(test_unique))
    nearest, _ = pldc.topk_neighbours(test_means, train_means, 1)
    nearest = np.asarray(nearest)[:, 0]
    return {str(s): int(train_unique[j]) for s, j in zip(test_unique, nearest, strict=True)}


def _calibrated_result(
    test: dict, test_vecs, train: dict, train_vecs, dimension: str, split: str, k: int
) -> EvalResult:
    """PLDC of `test`'s predictions with speakers retrieved by the given vectors.

    Args:
      test: `predict` output on the test split (with 'speaker_id').
      test_vecs: (N, D) retrieval vectors of the test utterances, in `test`'s order.
      train: `predict` output on the training split (labels and speaker indices).
      train_vecs: (M, D) retrieval vectors of the training utterances.
      dimension, split, k: As in `evaluate_seen`.
    """
    train_unique, train_dense = dense_ids(train["speaker"])
    _, test_dense = dense_ids(test["speaker_id"])
    if not 1 <= k < len(train_unique):
        # Cutting k to the speakers there are would retrieve every training speaker for
        # every test speaker: no longer personalised, so never done silently.
        raise ValueError(f"PLDC k={k} needs 1 <= k < {len(train_unique)} training speakers")
    out = pldc.pldc(
        test["prediction"], test_dense, test_vecs, train_vecs, train[dimension], train_dense, k
    )
    return EvalResult(
        dimension,
        split,
        test["key"],
        test["speaker_id"],
        test[dimension],
        test["prediction"],
        {mode: np.asarray(v) for mode, v in out.items()},
    )


def evaluate_seen(
    predict_step,
    variables,
    dimension: str,
    train: dict,
    batches: Iterable,
    mesh: Mesh,
    k: int,
    split: str = "test-b",
) -> EvalResult:
    """Predictions and PLDC on speakers seen in training.

    Args:
      predict_step: From `finetune.make_predict_step`.
      variables: Fine-tuned {'params', 'batch_stats'}.
      dimension: 'arousal' or 'valence'.
      train: `predict` output on the training split (labels, speakers, pooled).
      batches: One pass over the test split.
      mesh: Device mesh.
      k: PLDC neighbours.
      split: Name in reports.

    Returns:
      (the result, the `predict` output on the test split, with 'pooled').
    """
    test = predict(
        predict_step,
        variables,
        batches,
        mesh,
        extra_keys=("speaker_id",),
        description=f"evaluate[{dimension}] {split}",
    )
    result = _calibrated_result(test, test["pooled"], train, train["pooled"], dimension, split, k)
    return result, test


def evaluate_unseen(
    predict_step,
    variables,
    dimension: str,
    train: dict,
    original_train: dict,
    original_test: dict,
    batches: Iterable,
    mesh: Mesh,
    k: int,
    split: str = "test-c",
) -> EvalResult:
    """Proxy-speaker prediction and PLDC for speakers absent from training.

    Args:
      predict_step, variables, dimension, mesh, k, split: As in `evaluate_seen`.
      train: `predict` output on the training split (labels, speakers and 'speaker_id').
      original_train: `encode_pooled` of the original encoder on the training split
        (same utterance order as `train`).
      original_test: `encode_pooled` of the original encoder on the unseen split.
      batches: One pass over the unseen split.
    """
    if not np.array_equal(original_train["key"], train["key"]):
        raise ValueError("original-encoder and fine-tuned training passes differ in order")
    proxies = proxy_speakers(
        original_train["pooled"],
        train["speaker"],
        original_test["pooled"],
        original_test["speaker_id"],
    )
    speaker_of_key = {
        str(key): proxies[str(s)]
        for key, s in zip(original_test["key"], original_test["speaker_id"], strict=True)
    }
    test = predict(
        predict_step,
        variables,
        with_speakers(batches, speaker_of_key),
        mesh,
        extra_keys=("speaker_id",),
        description=f"evaluate[{dimension}] {split}",
    )
    order = {str(k): i for i, k in enumerate(original_test["key"])}
    rows = np.asarray([order[str(k)] for k in test["key"]])
    result = _calibrated_result(
        test, original_test["pooled"][rows], train, original_train["pooled"], dimension, split, k
    )
    return result, test


def evaluate_dimension(
    predict_step,
    variables,
    dimension: str,
    train_batches: Iterable,
    split_batches: dict[str, Iterable],
    original: dict[str, dict] | None,
    mesh: Mesh,
    k: int,
) -> tuple[list[EvalResult], dict[str, dict]]:
    """The whole protocol for one fine-tuned regressor: every split, with PLDC.

    Args:
      predict_step, variables, dimension, mesh, k: As in `evaluate_seen`.
      train_batches: One pass over the training split (PLDC's reference speakers).
      split_batches: dataset split name ('test_b', 'test_c', ...) -> one pass over it;
        'test_c' is evaluated as unseen speakers, every other split as seen ones.
      original: with 'test_c', `encode_pooled` of the original encoder on 'train' and
        'test_c' (speaker retrieval for unseen speakers).

    Returns:
      (one result per split, {'train' or split: its `predict` output with 'pooled'}).
    """
    train = predict(
        predict_step,
        variables,
        train_batches,
        mesh,
        extra_keys=("speaker_id",),
        description=f"evaluate[{dimension}] train",
    )
    results, passes = [], {"train": train}
    for split, batches in split_batches.items():
        name = split.replace("_", "-")
        if split == "test_c":
            if original is None:
                raise ValueError("test_c needs the original encoder's pooled vectors")
            result, test = evaluate_unseen(
                predict_step,
                variables,
                dimension,
                train,
                original["train"],
                original["test_c"],
                batches,
                mesh,
                k,
                split=name,
            )
        else:
            result, test = evaluate_seen(
                predict_step, variables, dimension, train, batches, mesh, k, split=name
            )
        results.append(result)
        passes[split] = test
    return results, passes


def unseen_proxies(passes: dict[str, dict], split: str = "test_c") -> dict[str, str]:
    """{unseen speaker id: id of its proxy training speaker}, unseen speakers in reading
    order, read from `evaluate_dimension`'s passes (the unseen pass's 'speaker' holds each
    row's proxy index, the training pass maps indices to ids)."""
    train = passes["train"]
    train_ids = dict(
        zip(train["speaker"].tolist(), train["speaker_id"].astype(str).tolist(), strict=True)
    )
    test = passes[split]
    proxy_of = dict(
        zip(test["speaker_id"].astype(str).tolist(), test["speaker"].tolist(), strict=True)
    )
    return {s: train_ids[proxy_of[s]] for s in speaker_order(list(proxy_of))}


def save_passes(passes: dict[str, dict], path) -> None:
    """Writes `evaluate_dimension`'s passes as one `.npz`: '<pass>/<field>' arrays."""
    arrays = {
        f"{name}/{field}": np.asarray(value)
        for name, fields in passes.items()
        for field, value in fields.items()
    }
    np.savez(path, **{k: v.astype(str) if v.dtype == object else v for k, v in arrays.items()})
