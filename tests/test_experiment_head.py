"""A converted pre-training head is reused only with the pseudo-labels it was trained on."""

from __future__ import annotations

import logging

import numpy as np

from papt_jax.convert import ConvertedCheckpoint
from papt_jax.experiment.pretraining import _head
from papt_jax.models.config import get_preset
from papt_jax.models.heads import PretrainHeadConfig

# A fairseq-style head: 500 clusters behind the dictionary's 4 special rows.
FAIRSEQ_HEAD = PretrainHeadConfig(final_dim=16, num_label_rows=504, label_offset=4)
HEAD_PARAMS = {"label_embs_concat": np.ones((504, 16), np.float32)}


def encoder(head_config=FAIRSEQ_HEAD, head_params=HEAD_PARAMS):
    return ConvertedCheckpoint(get_preset("tiny"), {}, head_config, head_params, "fairseq")


def test_fresh_k_means_labels_get_a_fresh_head_and_say_so(caplog):
    with caplog.at_level(logging.INFO):
        config, params, source = _head(encoder(), 500, 16, own_labels=False)
    assert params is None and config.num_label_rows == 500 and config.label_offset == 0
    assert source == "fresh (pseudo-labels are not the checkpoint's own)"
    assert "--config.pseudo_labels.centroids" in caplog.text


def test_the_checkpoints_own_labels_reuse_its_head():
    config, params, source = _head(encoder(), 500, 16, own_labels=True)
    assert params is HEAD_PARAMS and config == FAIRSEQ_HEAD
    assert source == "checkpoint's own"


def test_own_labels_with_another_cluster_count_still_get_a_fresh_head():
    config, params, source = _head(encoder(), 100, 16, own_labels=True)
    assert params is None and config.num_label_rows == 100 and source == "fresh"


def test_an_encoder_without_a_head_gets_a_fresh_one():
    config, params, source = _head(encoder(None, None), 50, 32, own_labels=False)
    assert params is None and config.final_dim == 32 and source == "fresh"
