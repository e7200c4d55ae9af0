"""MSP-Podcast reader: labels CSV, validation, split rules and the speaker index.

Modules: `schema` (layout, header, names, `CorpusConfig`, errors), `rows` (the labels CSV),
`durations` (audio headers), `splits` (split rules, speaker index, `load_corpus`).

The same reader serves every MSP-Podcast release from v1.6 to v1.12 and the embedded
synthetic corpus, which uses the same layout:

    RELEASE/Audios/<FileName>                      audio (16 kHz mono wav as shipped)
    RELEASE/Labels/labels_consensus.csv            v1.9 on; v1.6-v1.8 spell it
                                                   labels_concensus.csv
    RELEASE/Partitions.txt, Speaker_ids.txt, ...   anything else is ignored

Every release has the header `FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set`
(`CSV_COLUMNS`).
Split names differ by release (`Validation` up to v1.8, `Development` from v1.9; `Test1`,
`Test2`, and from v1.11 `Test3`, whose labels may be withheld); they are mapped by
configuration (`CorpusConfig.splits`, `CorpusConfig.test_c_splits`). A configured split name
that matches no row is an error listing the names present.

test_c comes from a newer release, in one of two layouts:

* its own release folder (`CorpusConfig.new_corpus_dir`, e.g. v1.10 next to v1.6): labels
  found there by the same spelling rules, audio read from ITS `Audios/`;
* a labels file inside the same tree (`CorpusConfig.new_labels_file`, e.g. the synthetic
  corpus's `Labels_new/labels_consensus.csv`): audio read from the main `Audios/`.

Splits (Tran et al., Interspeech 2023):

* train, validation: the older release's splits, mapped by name (`CorpusConfig.splits`).
* test_a / test_b: the older release's test split, divided per speaker. A speaker's test
  utterances are sorted by file name and taken in that order into test_a until their summed
  duration reaches `test_a_seconds` (the utterance that crosses the threshold is included, so
  test_a holds at least `test_a_seconds` of that speaker unless the speaker has less in total);
  the remaining utterances form test_b. Each test utterance is in exactly one of the two.
* test_c: utterances of the newer release's test split(s) whose speakers are not in the older
  release's test split. They are unseen speakers: their `speaker_index` is -1. A warning names
  any of them that do appear in the older train or validation split.

Only rows of the splits a run uses are validated: rows of other splits (e.g. `Test3` rows with
withheld labels, or the newer release's `Train` rows) are counted and ignored, as are rows
whose speaker is "Unknown" (the count is logged). Bad rows of used splits raise one
`BadRowsError` listing them, or are skipped with counts per reason (`on_bad_rows="skip"`).
Audio files are probed once (header only) and the result is cached.
"""

from papt_jax.data.msp_podcast.durations import (
    DurationCache,
    probe_rows,
)
from papt_jax.data.msp_podcast.rows import (
    LabelRow,
    check_split_names,
    load_rows,
    read_label_rows,
    select_rows,
    validate_rows,
)
from papt_jax.data.msp_podcast.schema import (
    CSV_COLUMNS,
    DEFAULT_COLUMNS,
    DEFAULT_SPLITS,
    DIMENSIONS,
    LABEL_CENTRE,
    LABEL_FILE_NAMES,
    LABEL_MAX,
    LABEL_MIN,
    LAYOUT_HINT,
    MAX_LISTED_ROWS,
    RATED_DIMENSIONS,
    SPLIT_NAMES,
    SPLIT_SETTINGS,
    UNKNOWN_SPEAKER,
    BadAudioError,
    BadRow,
    BadRowsError,
    CorpusConfig,
    CorpusError,
    SkippedAudio,
    check_release_dir,
    find_labels_file,
)
from papt_jax.data.msp_podcast.splits import (
    Corpus,
    Utterance,
    build_speaker_index,
    load_corpus,
    read_speakers,
    select_test_c,
    speaker_sort_key,
    split_test_a_b,
    write_speakers,
)

__all__ = [
    "BadAudioError",
    "BadRow",
    "BadRowsError",
    "CSV_COLUMNS",
    "Corpus",
    "CorpusConfig",
    "CorpusError",
    "DEFAULT_COLUMNS",
    "DEFAULT_SPLITS",
    "DIMENSIONS",
    "DurationCache",
    "LABEL_CENTRE",
    "LABEL_MAX",
    "LABEL_FILE_NAMES",
    "LABEL_MIN",
    "LAYOUT_HINT",
    "LabelRow",
    "MAX_LISTED_ROWS",
    "RATED_DIMENSIONS",
    "SPLIT_NAMES",
    "SPLIT_SETTINGS",
    "SkippedAudio",
    "UNKNOWN_SPEAKER",
    "Utterance",
    "build_speaker_index",
    "check_release_dir",
    "check_split_names",
    "find_labels_file",
    "load_corpus",
    "load_rows",
    "probe_rows",
    "read_label_rows",
    "read_speakers",
    "select_rows",
    "select_test_c",
    "speaker_sort_key",
    "split_test_a_b",
    "validate_rows",
    "write_speakers",
]
