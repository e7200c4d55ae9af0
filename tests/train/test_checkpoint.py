"""Checkpoints you can trust: manifests, fallback to a good step, idempotent saves, save_tree.

The training-loop side (resuming after a kill between the best and latest saves, or from
a damaged latest step) is in tests/train/test_train.py.
"""

import logging

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from papt_jax.errors import UserError
from papt_jax.train import checkpoint
from papt_jax.train.checkpoint import CheckpointError, Checkpoints, restore_tree, save_tree


def tree(value: float):
    """A small pytree whose array file is the biggest of a save (random, so incompressible)."""
    w = np.random.RandomState(0).randn(128, 128).astype(np.float32)
    w[0, 0] = value
    return {"w": w, "b": np.arange(3, dtype=np.float32)}


def flip_bytes_in_largest_file(folder, count=64):
    """Inverts `count` bytes in the middle of the biggest file below `folder`."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != checkpoint.MANIFEST_FILE]
    biggest = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    mid = len(data) // 2
    data[mid : mid + count] = bytes(b ^ 0xFF for b in data[mid : mid + count])
    biggest.write_bytes(bytes(data))
    return biggest


def save_steps(ckpt, steps):
    for s in steps:
        ckpt.save_latest(s, tree(float(s)), {"step": s})


def restored_step(ckpt):
    state, meta = ckpt.restore_latest(tree(0.0))
    assert float(state["w"][0, 0]) == meta["step"]
    return meta["step"]


def test_keeps_the_last_two_latest_steps_each_with_a_manifest(tmp_path):
    ckpt = Checkpoints(tmp_path)
    save_steps(ckpt, [3, 6, 9])
    assert ckpt.latest_steps() == [6, 9]
    for s in (6, 9):
        assert (ckpt.latest_dir / str(s) / checkpoint.MANIFEST_FILE).is_file()
        assert checkpoint.manifest_problem(ckpt.latest_dir / str(s)) is None
    assert restored_step(ckpt) == 9


def test_flipped_bytes_fall_back_to_the_previous_step_with_a_warning(tmp_path, caplog):
    ckpt = Checkpoints(tmp_path)
    save_steps(ckpt, [3, 6])
    step6 = ckpt.latest_dir / "6"
    flip_bytes_in_largest_file(step6)
    # The fault: Orbax alone restores the damaged step without complaint.
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as raw:
        damaged = raw.restore(
            step6,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(jax.tree.map(np.zeros_like, tree(0.0)))
            ),
        ).state
    assert not np.array_equal(np.asarray(damaged["w"]), tree(6.0)["w"])
    assert np.isfinite(np.asarray(damaged["w"])).mean() > 0.5  # plausible-looking numbers
    # Now: the manifest catches it and the run resumes from step 3, saying why.
    assert "sha256" in checkpoint.manifest_problem(step6)
    with caplog.at_level(logging.WARNING):
        assert restored_step(ckpt) == 3
    assert "step 6" in caplog.text and "damaged" in caplog.text and "from step 3" in caplog.text


@pytest.mark.parametrize("damage", ["manifest", "file", "restore"])
def test_other_damage_also_falls_back(tmp_path, damage, caplog):
    ckpt = Checkpoints(tmp_path)
    save_steps(ckpt, [3, 6])
    step6 = ckpt.latest_dir / "6"
    if damage == "manifest":  # a kill after Orbax finished but before the manifest
        (step6 / checkpoint.MANIFEST_FILE).unlink()
    elif damage == "file":
        next(p for p in (step6 / "state").rglob("*") if p.is_file()).unlink()
    else:  # the manifest matches, but Orbax cannot read what it describes
        (step6 / "state" / "_METADATA").write_text("{not json")
        checkpoint.write_manifest(step6)
    with caplog.at_level(logging.WARNING):
        assert restored_step(ckpt) == 3
    assert "step 6" in caplog.text


def test_no_good_step_is_a_user_error_naming_the_folder(tmp_path):
    ckpt = Checkpoints(tmp_path)
    save_steps(ckpt, [3, 6])
    for s in (3, 6):
        flip_bytes_in_largest_file(ckpt.latest_dir / str(s))
    with pytest.raises(CheckpointError, match="no usable checkpoint in") as info:
        ckpt.restore_latest(tree(0.0))
    assert str(ckpt.latest_dir) in str(info.value) and "step 3" in str(info.value)
    assert isinstance(info.value, UserError) and info.value.hint


def test_an_empty_folder_restores_nothing(tmp_path):
    assert Checkpoints(tmp_path).restore_latest(tree(0.0)) is None
    assert Checkpoints(tmp_path).restore_best(tree(0.0)) is None


def test_saving_an_existing_step_keeps_a_good_one_and_replaces_a_damaged_one(tmp_path):
    ckpt = Checkpoints(tmp_path)
    ckpt.save_best(6, tree(6.0), {"step": 6})
    # Before, the same save after a resume raised StepAlreadyExistsError.
    ckpt.save_best(6, tree(6.0), {"step": 6})
    manifest = ckpt.best_dir / "6" / checkpoint.MANIFEST_FILE
    written = manifest.stat().st_mtime_ns
    ckpt.save_best(6, tree(6.0), {"step": 6})
    assert manifest.stat().st_mtime_ns == written  # verified and kept, not rewritten
    flip_bytes_in_largest_file(ckpt.best_dir / "6")
    ckpt.save_best(6, tree(6.0), {"step": 6})
    state, meta = ckpt.restore_best(tree(0.0), step=6)
    assert meta["step"] == 6 and float(state["w"][0, 0]) == 6.0


def test_best_keeps_one_step_and_falls_back_to_its_copy_in_latest(tmp_path):
    ckpt = Checkpoints(tmp_path)
    ckpt.save_best(3, tree(3.0), {"step": 3})
    ckpt.save_best(6, tree(6.0), {"step": 6})
    assert ckpt.best_steps() == [6]
    assert ckpt.best_meta()["step"] == 6
    save_steps(ckpt, [6])
    flip_bytes_in_largest_file(ckpt.best_dir / "6")
    state, _ = ckpt.restore_best(tree(0.0), step=6)
    assert float(state["w"][0, 0]) == 6.0
    flip_bytes_in_largest_file(ckpt.latest_dir / "6")
    with pytest.raises(CheckpointError, match=r"best checkpoint \(step 6\)"):
        ckpt.restore_best(tree(0.0), step=6)


def test_leftovers_of_a_killed_save_are_removed_and_never_read(tmp_path):
    ckpt = Checkpoints(tmp_path)
    save_steps(ckpt, [3])
    # What a kill leaves: Orbax's temporary folder and our unfinished folder.
    for name in (
        "6.orbax-checkpoint-tmp-1712",
        "6.unfinished",
        "6.unfinished.orbax-checkpoint-tmp-9",
    ):
        (ckpt.latest_dir / name / "state").mkdir(parents=True)
        (ckpt.latest_dir / name / "state" / "junk").write_bytes(b"half")
    ckpt = Checkpoints(tmp_path)
    assert sorted(p.name for p in ckpt.latest_dir.iterdir()) == ["3"]
    assert restored_step(ckpt) == 3
    save_steps(ckpt, [6])
    assert restored_step(ckpt) == 6


def test_save_removes_damaged_steps_ahead_of_it(tmp_path):
    """After falling back from a damaged step 9 to 6, the next save leaves no stale 9."""
    ckpt = Checkpoints(tmp_path)
    save_steps(ckpt, [6, 9])
    flip_bytes_in_largest_file(ckpt.latest_dir / "9")
    assert restored_step(ckpt) == 6
    save_steps(ckpt, [7])
    assert ckpt.latest_steps() == [6, 7]


def test_describe_names_what_exists(tmp_path):
    ckpt = Checkpoints(tmp_path)
    assert "no checkpoint has been saved yet" in ckpt.describe()
    save_steps(ckpt, [3])
    assert "step(s) 3" in ckpt.describe()


def test_save_tree_round_trips_and_replaces(tmp_path):
    path = tmp_path / "best_variables"
    save_tree(path, tree(1.0))
    save_tree(path, tree(2.0))
    restored = restore_tree(path)
    np.testing.assert_array_equal(restored["w"], tree(2.0)["w"])
    restored = restore_tree(path, target=tree(0.0))
    np.testing.assert_array_equal(restored["b"], tree(2.0)["b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_variables"]


def test_save_tree_damage_and_absence_are_user_errors(tmp_path):
    path = tmp_path / "best_variables"
    with pytest.raises(CheckpointError, match="does not exist"):
        restore_tree(path)
    save_tree(path, tree(1.0))
    flip_bytes_in_largest_file(path)
    with pytest.raises(CheckpointError, match="sha256") as info:
        restore_tree(path)
    assert str(path) in str(info.value)


def test_save_tree_ignores_and_cleans_a_killed_save(tmp_path):
    path = tmp_path / "enc"
    save_tree(path, tree(1.0))
    # A kill during the next save: a half-written sibling, no manifest.
    (tmp_path / "enc.new.unfinished" / "x").mkdir(parents=True)
    (tmp_path / "enc.new.orbax-checkpoint-tmp-5").mkdir()
    np.testing.assert_array_equal(restore_tree(path)["w"], tree(1.0)["w"])
    save_tree(path, tree(3.0))
    np.testing.assert_array_equal(restore_tree(path)["w"], tree(3.0)["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc"]


def test_replicated_arrays_are_split_among_replicas_only_when_large(tmp_path):
    """Over 8 devices a replicated leaf is written by its replicas in parts only when each
    part is at least MIN_REPLICA_PARALLEL_BYTES (one device-side slice per part, which
    for a train state's many small leaves is only overhead); both round trip exactly."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(jax.devices()[:8]), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    per_part = checkpoint.MIN_REPLICA_PARALLEL_BYTES // 4  # float32 values in one part
    tree = {
        "small": np.arange(1000, dtype=np.float32),
        "large": np.arange(8 * per_part, dtype=np.float32),  # 8 parts of the threshold
    }
    save_tree(tmp_path / "tree", jax.device_put(tree, replicated))
    handler = ocp.type_handlers.get_type_handler(jax.Array)
    assert handler._min_slice_bytes_for_replica_parallel == checkpoint.MIN_REPLICA_PARALLEL_BYTES
    # Otherwise as Orbax's default handler: the save keeps its per-array metadata.
    assert list((tmp_path / "tree").rglob("array_metadatas")), sorted(
        p.name for p in (tmp_path / "tree").rglob("*")
    )
    restored = restore_tree(tmp_path / "tree", jax.device_put(tree, replicated))
    for name, value in tree.items():
        np.testing.assert_array_equal(np.asarray(restored[name]), value, err_msg=name)


def test_saving_and_restoring_a_layer_stack_prints_no_orbax_warnings(tmp_path, caplog):
    """Orbax's notices that read like problems stay out of the console: the override of its
    array handler (registered on purpose) and, on every restore of a tree with a layer
    stack, a missing step-metadata file (looked for in the item's folder, which has none)."""
    stacked = {"encoder": {"layers": {"w": np.ones((2, 3), np.float32)}}, "b": np.zeros(3)}
    with caplog.at_level(logging.WARNING, logger="absl"):
        checkpoint._use_replica_parallel_for_large_arrays.__wrapped__()
        ckpt = Checkpoints(tmp_path / "ckpt")
        ckpt.save_latest(1, stacked, {"step": 1})
        ckpt.save_best(1, stacked, {"step": 1})
        restored, _ = ckpt.restore_best(stacked)
        restored, _ = ckpt.restore_latest(stacked)
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == []
    np.testing.assert_array_equal(
        restored["encoder"]["layers"]["w"], stacked["encoder"]["layers"]["w"]
    )
