"""Default experiment configuration shared by `configs/*.py`.

Every field has a comment; `configs/papt.py`, `configs/tapt.py` and
`configs/vanilla_ft.py` start from `base_config()` and change what differs. The
defaults are the paper's setting (HuBERT-large, MSP-Podcast v1.6 splits); `demo`
and `smoke` variants (`apply_embedded_corpus`) run on the embedded synthetic corpus.
"""

from __future__ import annotations

import ml_collections

from papt_jax.data.synthetic.presets import CORPUS_PRESETS
from papt_jax.experiment.settings import STAGES, ConfigError


def _untyped(value):
    """A config value that later assignments may give another type (ConfigDict fields keep
    their first value's type otherwise)."""
    return ml_collections.FieldReference(value, field_type=object)


def base_config() -> ml_collections.ConfigDict:
    """The paper's PAPT setting; needs MSP-Podcast and a converted HuBERT-large."""
    c = ml_collections.ConfigDict()
    c.name = "papt"  # system name in reports
    c.seed = 0  # one seed drives init, shuffling, masking and dropout
    c.stages = ",".join(STAGES)  # comma-separated subset of the stages, run in order
    c.num_devices = 0  # devices in the data-parallel mesh (0: all)
    c.log_every = 10  # steps between host reads of training metrics

    # --- Corpus and dataset ---------------------------------------------------------
    c.data = d = ml_collections.ConfigDict()
    d.corpus_dir = ""  # MSP-Podcast root (Audios/, Labels/); required for real data
    d.synthetic_preset = ""  # 'demo' / 'smoke': generate the embedded corpus instead
    d.labels_file = ""  # default: <corpus>/Labels/labels_consensus.csv (or 'concensus')
    d.new_corpus_dir = ""  # newer release's own folder for test-c (e.g. MSP-Podcast v1.10)
    d.new_labels_file = ""  # or just its labels file (audio in corpus_dir); both '': no test-c
    d.train_splits = "Train"  # Split_Set values of the training set (comma-separated)
    d.validation_splits = "Development,Validation"  # ... of the validation set
    d.test_splits = "Test1"  # ... of the test set (split into test-a / test-b)
    d.new_test_splits = "Test1"  # ... of the newer release's test set (for test-c)
    d.test_a_seconds = 200.0  # test-a: per test speaker, utterances adding up to this
    d.on_bad_rows = "error"  # 'error' lists bad CSV rows; 'skip' logs and drops them
    d.on_bad_audio = "skip"  # 'skip' lists unreadable/too-short audio in a report; 'error'
    d.resample = False  # resample other rates to 16 kHz instead of rejecting them
    d.data_dir = ""  # TFDS output (default: <workdir>/data)
    d.verify_audio = "stat"  # data changes seen by audio size and time; 'content': SHA-256
    d.max_seconds = 15.0  # random crop (training) / truncation (evaluation) length
    d.num_buckets = 6  # padded lengths (at most 8), from corpus length quantiles
    d.batch_seconds = 0.0  # >0: batch by total audio seconds per batch
    d.batch_size = 8  # utterances per batch (global, all devices) when batch_seconds is 0
    d.eval_batch_size = 8  # utterances per evaluation batch
    d.worker_count = 0  # Grain worker processes (0: in the main process)

    # --- Encoder initialisation -----------------------------------------------------
    c.model = m = ml_collections.ConfigDict()
    m.init = ""  # 'converted:DIR' (from python -m papt_jax.convert), 'pytorch:PATH', 'preset:NAME'
    m.dtype = "float32"  # compute dtype: 'float32' or 'bfloat16' (parameters stay float32)
    # Untyped so that the True/False of older configs still assign (read as 'full' / 'none').
    m.remat = _untyped("none")  # recomputed in backward: 'none', 'full', 'dots_saveable', ...
    m.scan_layers = True  # one scanned layer stack (fast compile); False unrolls (debugging)
    m.allow_unsafe_pickle = False  # fairseq .pt files needing full unpickling (trusted files only)

    # --- Training at scale (every training stage: bootstrap, pretrain, finetune) ----------
    c.train = tr = ml_collections.ConfigDict()
    # A step takes data.batch_size rows (the effective batch) in accumulate_steps slices,
    # one slice's activations in memory at a time.
    tr.accumulate_steps = 1  # micro-batches per optimiser step (gradient accumulation)
    # 'fsdp': each device holds a 1/num_devices slice of the large arrays.
    tr.param_sharding = "replicated"  # parameters + optimiser state: 'replicated' or 'fsdp'

    # --- Embedded-corpus bootstrap: HuBERT iteration 1 from scratch on MFCC labels -------
    c.bootstrap = b = ml_collections.ConfigDict()
    b.preset = "small"  # encoder preset trained from scratch
    b.num_clusters = 50  # k-means clusters on MFCC features
    # The stand-in for a checkpoint pre-trained elsewhere (LibriLight for HuBERT-large) sees
    # no test audio: adapting to the test speakers' audio is what TAPT/PAPT add.
    b.train_splits = "train"  # audio it is trained on
    b.eval_split = "validation"  # its validation loss
    b.epochs = 10  # passes over its training audio
    b.peak_lr = 5e-4  # from-scratch training needs a larger step than continued training
    b.mask_prob = 0.65  # share of frames that start a masked span
    b.features_pen_weight = 0.0  # weight of the CNN-feature L2 penalty

    # --- Pseudo-labels ---------------------------------------------------------------
    c.pseudo_labels = p = ml_collections.ConfigDict()
    p.source = "teacher"  # 'teacher' (encoder layer features) or 'mfcc' (39-dim, 100 Hz)
    p.teacher = ""  # 'converted:DIR' / 'pytorch:PATH' (HuBERT-base iter 2) / 'bootstrap'
    p.layer = 9  # teacher layer whose output is clustered
    p.num_clusters = 500  # k-means clusters (the paper's HuBERT-large recipe: 500)
    p.fit_fraction = 0.1  # share of utterances whose frames fit k-means
    p.kmeans_batch_size = 10_000  # frames per mini-batch k-means step (fairseq: 10 000)
    p.kmeans_max_iter = 100  # mini-batch k-means iterations (fairseq: 100)
    p.kmeans_n_init = 20  # k-means++ initialisations, the best kept (fairseq: 20)
    p.centroids = ""  # precomputed centroids (.npy, (K, dim)) instead of fitting

    # --- Continued pre-training (PAPT / TAPT) -----------------------------------------
    c.pretrain = t = ml_collections.ConfigDict()
    t.speaker_fusion = "last"  # 'last' (PAPT), 'first', 'prefix' or 'none' (TAPT)
    t.train_splits = "train,validation,test_b"  # audio used for adaptation (no labels)
    t.eval_split = "test_a"  # validation loss
    t.epochs = 10  # paper: 10 epochs
    t.peak_lr = 1e-5  # paper: peak learning rate 1e-5
    t.warmup_fraction = 0.05  # paper: linear schedule with 5 % warm-up
    # Optimiser: "all other settings identical to HuBERT's pre-training" (paper), i.e.
    # fairseq examples/hubert/config/pretrain/hubert_large_lv60k.yaml: Adam betas
    # (0.9, 0.98), eps 1e-6, decoupled weight decay 0.01, gradient clipping at norm 1.0.
    t.adam_b1 = 0.9  # Adam first-moment decay (fairseq HuBERT: 0.9)
    t.adam_b2 = 0.98  # Adam second-moment decay (fairseq HuBERT: 0.98)
    t.adam_eps = 1e-6  # Adam denominator constant (fairseq HuBERT: 1e-6)
    t.weight_decay = 0.01  # decoupled weight decay (fairseq HuBERT: 0.01)
    t.clip_norm = 1.0  # gradient clipping at this global norm (fairseq HuBERT large: 1.0)
    # Dropout inside the encoder during PAPT/TAPT, set here rather than taken from the
    # checkpoint's config (HF's hubert-large-ll60k says 0.1): fairseq's HuBERT-large recipe
    # (hubert_large_librivox.yaml) uses 0 everywhere (base: 0.1 for hidden/attention/input).
    t.hidden_dropout = 0.0  # residual branches and encoder input (fairseq `dropout`: 0.0)
    t.attention_dropout = 0.0  # attention probabilities (fairseq: 0.0)
    t.activation_dropout = 0.0  # after the feed-forward activation (fairseq: 0.0)
    t.feat_proj_dropout = 0.0  # after the feature projection (fairseq `dropout_input`: 0.0)
    t.mask_prob = 0.8  # share of frames starting a masked span (fairseq base and large: 0.8)
    t.mask_length = 10  # masked span length in frames (fairseq: 10)
    t.features_pen_weight = 10.0  # CNN-feature L2 penalty weight (fairseq base and large: 10)
    # fairseq HuBERT pre-training (`pad_audio: false`): every batch is cropped to its
    # shortest utterance, each row at a random start; length buckets keep the loss small.
    t.crop_to_shortest = True  # False: pad within the bucket (longer rows masked less)
    t.final_dim = 768  # head width when the checkpoint has no head (256 for base)
    # The objective (README "Pre-training objectives"): 'auto' is the encoder family's own,
    # wav2vec2's contrastive loss, masked prediction for HuBERT, WavLM, data2vec-audio.
    t.objective = "auto"  # 'auto', 'masked_prediction' (pseudo-labels) or 'contrastive'
    t.utterance_mixing = "auto"  # WavLM's denoising: 'auto' (on for WavLM), 'on', 'off'
    t.mixing_prob = 0.2  # share of utterances mixed (WavLM authors' dataset default 0.2)
    # WavLM mixes noise as well as speech (the paper: DNS challenge noise). The authors'
    # microsoft/UniSpeech src/fairseq/tasks/utterance_mixing_pretraining.py: `mixing_noise`
    # False, `mixing_noise_prob` 0.5, `noise_path` ''; utterance_mixing_dataset.py draws
    # the noise energy ratio from U(-5, 20) dB (speech: U(-5, 5) dB).
    t.noise_dir = ""  # folder of noise audio for WavLM's mixing ('': other utterances only)
    t.noise_prob = 0.5  # of mixed utterances, the share mixed with noise (authors' task: 0.5)
    t.num_negatives = 100  # contrastive: negatives per masked frame (fairseq, transformers: 100)
    t.diversity_weight = 0.1  # contrastive: codebook-diversity loss weight (fairseq: 0.1)
    # Gumbel temperature max(max * decay**update, min): fairseq `latent_temp` (2, 0.5, 0.999995)
    t.gumbel_temp_max = 2.0  # temperature at update 0
    t.gumbel_temp_min = 0.5  # its floor (fairseq's large recipe: 0.1)
    t.gumbel_temp_decay = 0.999995  # factor per update
    t.gumbel_step_offset = 0  # updates the checkpoint already made: continue its schedule there
    # A quantizer created for a checkpoint without one (its projection width is final_dim).
    t.num_codevector_groups = 2  # G codebooks (fairseq `latent_groups`: 2)
    t.num_codevectors_per_group = 320  # V entries each (fairseq `latent_vars`: 320)
    t.codevector_dim = 768  # quantized vector width (fairseq `latent_dim`; wav2vec2-base 256)
    # Dropout on the quantizer's input (fairseq `dropout_features`, transformers
    # `feat_quantizer_dropout`). -1: the checkpoint's own value where its file has one, else
    # 0.0, fairseq's Wav2Vec2Config default and large recipe, like the encoder dropouts
    # above (its base recipe: 0.1).
    t.quantizer_dropout = -1.0  # contrastive: quantizer-input dropout; -1: the checkpoint's own
    t.stop_after_steps = 0  # >0: stop there (resume later); for time-boxed jobs and tests

    # --- Every training stage (bootstrap, pretrain, finetune): preemption --------------
    # On SIGTERM / SIGINT a training stage saves its current step and exits with code 75;
    # this bounds what a SIGKILL (no warning at all) loses. Changes no result.
    tr.checkpoint_every_minutes = 30.0  # also save the latest checkpoint this often (0: off)

    # --- Fine-tuning -----------------------------------------------------------------
    c.finetune = f = ml_collections.ConfigDict()
    f.dimensions = "arousal,valence"  # one regressor each
    f.init = "pretrain"  # 'pretrain' (this run's adapted encoder) or 'model' (model.init)
    f.epochs = 10  # paper: at most 10 epochs, early stopping on validation CCC
    f.peak_lr = 5e-5  # paper: Adam, learning rate 5e-5
    f.schedule = "constant"  # paper: Adam 5e-5; 'linear' adds warm-up and decay
    f.warmup_fraction = 0.0  # warm-up share of the steps with schedule 'linear'
    f.clip_norm = 10.0  # gradient clipping (global norm)
    f.patience = 3  # evaluations without validation-CCC gain before stopping
    f.freeze_feature_extractor = True  # keep the CNN fixed (common practice; paper silent)
    f.label_scaling = "none"  # 'none' (1..7) or 'unit' ([0, 1]); CCC is on 1..7 either way
    f.head_dropout = 0.1  # paper: dropout 0.1 in the regression head
    f.stop_after_steps = 0  # >0: stop there (resume later); for time-boxed jobs and tests
    f.speaker_weighting = "none"  # 'b2': Sridhar & Busso's speaker-similarity loss weights
    f.train_speakers = 0  # >0: only this many training speakers (nested subsets; Figure 1)
    f.speaker_dependent = False  # with train_speakers: swap some for test-a's speakers + test-a

    # --- B2 baseline (finetune.speaker_weighting='b2'; papt_jax/b2.py explains each) -------
    c.b2 = b2 = ml_collections.ConfigDict()
    b2.test_split = "test_b"  # test speakers' audio (no labels) that picks the adaptation set
    b2.pca_components = 10  # whitened PCA components of the ComParE functionals
    b2.gmm_components = 2  # diagonal Gaussians per speaker mixture
    b2.neighbours = 5  # closest training speakers per test speaker (the adaptation set)
    b2.weight = 2.0  # loss weight of adaptation-set utterances (others 1; mean scaled to 1)

    # --- Evaluation with PLDC ---------------------------------------------------------
    c.evaluate = e = ml_collections.ConfigDict()
    e.splits = "test_b,test_c"  # test-b: seen speakers; test-c: unseen (needs a newer release)
    e.pldc_k = 10  # retrieved training speakers per test speaker
    return c


def apply_embedded_corpus(
    c: ml_collections.ConfigDict, preset: str, family: str = "hubert"
) -> ml_collections.ConfigDict:
    """Switches `c` to the embedded synthetic corpus ('demo' or 'smoke') and a small model.

    No pretrained weights can be downloaded, so the run first pre-trains a small encoder
    of `family` ('hubert', 'wav2vec2', 'wavlm', 'data2vec_audio') from scratch on MFCC
    labels (`bootstrap`), then adapts it with labels from one of its layers: the HuBERT
    recipe in miniature, whatever the encoder's family.
    """
    if preset not in CORPUS_PRESETS:
        raise ConfigError(
            f"embedded corpus preset must be one of {', '.join(CORPUS_PRESETS)}, got {preset!r}"
        )
    smoke = preset == "smoke"
    c.data.synthetic_preset = preset
    c.data.new_labels_file = "Labels_new/labels_consensus.csv"
    c.data.test_a_seconds = 6.0 if smoke else 12.0
    c.data.max_seconds = 3.0
    # Few buckets: every bucket is one more compiled shape per training run.
    c.data.num_buckets = 1 if smoke else 4
    c.data.batch_size = 8
    c.data.eval_batch_size = 8
    c.model.init = "bootstrap"
    size = "tiny" if smoke else "small"
    c.bootstrap.preset = size if family == "hubert" else f"{family.replace('_', '-')}-{size}"
    c.bootstrap.num_clusters = 16 if smoke else 50
    # The demo's budget is 15 minutes on 2 CPU cores (cold compilation cache): 2 bootstrap
    # and 4 fine-tuning epochs. launch/reproduce_tables.sh trains 3 and 6 (TABLE_EPOCHS).
    c.bootstrap.epochs = 1 if smoke else 2
    c.pseudo_labels.source = "teacher"
    c.pseudo_labels.teacher = "bootstrap"
    c.pseudo_labels.layer = 1 if smoke else 3
    c.pseudo_labels.num_clusters = 16 if smoke else 50
    c.pseudo_labels.fit_fraction = 1.0
    if smoke:  # the tests' runs: 10 passes over their few frames reach the inertia of 100
        c.pseudo_labels.kmeans_max_iter = 10
    c.pretrain.epochs = 1 if smoke else 2
    c.pretrain.peak_lr = 2e-4
    c.pretrain.mask_prob = 0.65
    c.pretrain.features_pen_weight = 0.0
    c.pretrain.final_dim = 32 if smoke else 64
    # wav2vec2's quantizer at the small model's scale (the objective is fairseq's).
    c.pretrain.codevector_dim = 32 if smoke else 64
    c.pretrain.num_codevectors_per_group = 32 if smoke else 64
    c.finetune.epochs = 1 if smoke else 4
    if smoke:  # one epoch: a larger step so the test sees the loss move
        c.finetune.peak_lr = 1e-3
    c.finetune.freeze_feature_extractor = True
    c.evaluate.pldc_k = 3 if smoke else 5
    # Few training speakers: 5 neighbours per test speaker would cover most of them.
    c.b2.neighbours = 2
    return c
