"""Checkpoints of ``train_sodec.py``: atomic saving (``accelerator.save_state`` with the save hooks' files and the
training clock), pruning to ``--checkpoints_total_limit``, finding the newest complete checkpoint to resume from,
and what happens after every optimisation step (:func:`checkpoint_and_validate`)."""

import json
import os
import re
import shutil
import time

import torch
from accelerate.logging import get_logger

from .discriminator import ConditionalPatchDiscriminator
from .modeling import (
    SODECTrainingModel,
    load_discriminator,
    load_trainable_state,
    save_discriminator,
    save_trainable_state,
    trainable_state_files,
)
from .validation import validate


logger = get_logger(__name__, log_level="INFO")


class TrainingClock:
    """Minutes of training so far: those of the run this one resumes (``resume``) plus this run's own."""

    FILE_NAME = "training_clock.json"

    def __init__(self):
        self.start, self.offset = time.monotonic(), 0.0

    def __call__(self) -> float:
        return self.offset + (time.monotonic() - self.start) / 60.0

    def save(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, self.FILE_NAME), "w") as f:
            json.dump({"minutes_trained": self()}, f)

    def resume(self, checkpoint_dir):
        """Continues the clock of a checkpoint; one saved before the clock was recorded continues from 0."""
        path = os.path.join(checkpoint_dir, self.FILE_NAME)
        if os.path.isfile(path):
            with open(path) as f:
                self.offset = float(json.load(f)["minutes_trained"])
        self.start = time.monotonic()


CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
#: A checkpoint is written in ``.checkpoint-N.tmp`` and renamed to ``checkpoint-N`` once complete; a
#: ``checkpoint-N`` it replaces waits as ``.checkpoint-N.old`` meanwhile, and one pruned is renamed
#: ``.checkpoint-N.pruned`` before it is deleted. The "latest" search and the pruning see ``checkpoint-N`` folders
#: only; the next start clears what a killed run left of the others.
TEMPORARY_CHECKPOINT = re.compile(r"\.checkpoint-(\d+)\.(tmp|old|pruned)")
#: What ``accelerator.save_state`` writes for process 0 in every run besides the save hook's files, random states last
ACCELERATE_STATE_FILES = ("optimizer.bin", "scheduler.bin", "random_states_0.pkl")


def list_checkpoints(output_dir):
    """``(step, path)`` of every ``checkpoint-N`` folder in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_NAME.fullmatch(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return sorted(found)


#: The EMA of the main parameters in a checkpoint (--use_ema): EMAModel's state and the parameters' names.
EMA_STATE_FILE = "ema.pt"


def missing_checkpoint_files(path, args):
    """The files of a complete checkpoint of this run (the trained networks' and accelerate's) that ``path``
    lacks or holds empty: what a run of an earlier version of this script left when killed while saving."""
    required = trainable_state_files(
        getattr(args, "unet_training", "lora"),
        getattr(args, "train_vae_decoder", False),
        getattr(args, "train_image_encoder", False),
    )
    missing = []
    if getattr(args, "use_ema", False):
        required = [*required, EMA_STATE_FILE]
    for name in [*required, *ACCELERATE_STATE_FILES]:
        file = os.path.join(path, name)
        if not os.path.isfile(file) or os.path.getsize(file) == 0:
            missing.append(name)
    return missing


def find_checkpoint(args):
    """The folder to resume from: --resume_from_checkpoint itself, or for "latest" the newest complete
    ``checkpoint-N`` in --output_dir (an incomplete one is skipped with a warning); None when there is none."""
    if args.resume_from_checkpoint != "latest":
        return args.resume_from_checkpoint
    for _, path in reversed(list_checkpoints(args.output_dir)):
        missing = missing_checkpoint_files(path, args)
        if not missing:
            return path
        logger.warning(f"Skipping the incomplete checkpoint {path}: it lacks {', '.join(missing)}")
    return None


def clear_temporary_checkpoints(output_dir):
    """Clears what a run killed while it saved or pruned checkpoints left in ``output_dir``: its temporary and pruned
    folders go, and a ``checkpoint-N`` that it was replacing comes back (main process, before anything looks for a
    checkpoint)."""
    if not os.path.isdir(output_dir):
        return
    for name in sorted(os.listdir(output_dir)):
        match = TEMPORARY_CHECKPOINT.fullmatch(name)
        if match is None:
            continue
        path, final = os.path.join(output_dir, name), os.path.join(output_dir, f"checkpoint-{match.group(1)}")
        if match.group(2) == "old" and not os.path.exists(final):
            os.replace(path, final)
            logger.warning(f"Restored {final}, which a run killed while it saved step {match.group(1)} was replacing")
        else:
            logger.warning(f"Removing {path}, left by a run killed while it saved or pruned checkpoints")
            shutil.rmtree(path)


def _fsync(path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder on a platform that cannot open one
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path) -> None:
    """Flushes every file and folder under ``path`` to disk, so that a renamed checkpoint survives a power cut."""
    for root, _, files in os.walk(path):
        for name in files:
            _fsync(os.path.join(root, name))
        _fsync(root)


def prune_checkpoints(output_dir, limit, keep, args):
    """Run once the checkpoint ``keep`` is complete: removes the oldest other complete checkpoints so that at most
    ``limit`` (at least 1) remain, ``keep`` among them. Incomplete ones neither count nor go (a resumed run
    replaces them when it saves their step again)."""
    others = [
        path
        for _, path in list_checkpoints(output_dir)
        if os.path.normpath(path) != os.path.normpath(keep) and not missing_checkpoint_files(path, args)
    ]
    to_remove = others[: max(0, len(others) - max(limit, 1) + 1)]
    if to_remove:
        logger.info(f"{len(others) + 1} checkpoints exist, removing {', '.join(map(os.path.basename, to_remove))}")
    for path in to_remove:  # renamed first: a run killed meanwhile leaves no partial checkpoint-N
        pruned = os.path.join(output_dir, f".{os.path.basename(path)}.pruned")
        if os.path.exists(pruned):
            shutil.rmtree(pruned)
        os.replace(path, pruned)
        shutil.rmtree(pruned)


def save_checkpoint(accelerator, args, step: int, clock) -> str:
    """Saves ``checkpoint-{step}`` atomically: ``accelerator.save_state`` (the save hooks' files included) and the
    training clock go to ``.checkpoint-{step}.tmp``, which is flushed and renamed only once complete; then the
    oldest checkpoints beyond --checkpoints_total_limit go. A run killed at any moment leaves the complete
    checkpoints it had, and at most the new one besides."""
    output_dir = args.output_dir
    final = os.path.join(output_dir, f"checkpoint-{step}")
    temporary = os.path.join(output_dir, f".checkpoint-{step}.tmp")
    if accelerator.is_main_process and os.path.exists(temporary):
        shutil.rmtree(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    accelerator.wait_for_everyone()  # every process's random states are written
    if accelerator.is_main_process:
        clock.save(temporary)
        _fsync_tree(temporary)
        replaced = os.path.join(output_dir, f".checkpoint-{step}.old")
        if os.path.exists(final):  # the same step saved by an earlier run (resumed from an older checkpoint)
            if os.path.exists(replaced):
                shutil.rmtree(replaced)
            os.replace(final, replaced)
        os.replace(temporary, final)
        _fsync(output_dir)
        if os.path.exists(replaced):
            shutil.rmtree(replaced)
        if args.checkpoints_total_limit is not None:
            prune_checkpoints(output_dir, args.checkpoints_total_limit, final, args)
    accelerator.wait_for_everyone()
    return final


def checkpoint_functions(network, action: str):
    """``(save, load)`` of what a checkpoint holds of ``network`` (unwrapped): what trains of a
    ``SODECTrainingModel``, or the discriminator's weights. ``action`` ("save", "load") names the refusal of any
    other network."""
    if isinstance(network, SODECTrainingModel):
        return save_trainable_state, load_trainable_state
    if isinstance(network, ConditionalPatchDiscriminator):
        return save_discriminator, load_discriminator
    raise ValueError(f"unexpected model to {action}: {type(network)}")


def register_checkpoint_hooks(accelerator, state) -> None:
    """accelerate's save/load hooks: the networks (:func:`checkpoint_functions`) and the EMA (``state``: a
    :class:`~sodec_training.training_step.TrainingState`, read when a hook runs)."""

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for m in models:
                unwrapped = accelerator.unwrap_model(m)
                save, _ = checkpoint_functions(unwrapped, "save")
                save(unwrapped, output_dir)
                if weights:
                    weights.pop()
            if state.ema is not None:
                ema_state = {"names": state.main_names, "state": state.ema.state_dict()}
                torch.save(ema_state, os.path.join(output_dir, EMA_STATE_FILE))

    def load_model_hook(models, input_dir):
        while models:
            unwrapped = accelerator.unwrap_model(models.pop())
            _, load = checkpoint_functions(unwrapped, "load")
            load(unwrapped, input_dir)
        if state.ema is not None:
            saved = torch.load(os.path.join(input_dir, EMA_STATE_FILE), map_location="cpu", weights_only=True)
            if saved["names"] != state.main_names:
                raise ValueError(f"{input_dir}: its EMA is of other parameters than this run trains")
            state.ema.load_state_dict(saved["state"])
            state.ema.to(accelerator.device)

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)


def resume_from_checkpoint(accelerator, args, clock: TrainingClock) -> int:
    """Clears what a killed run left (main process), then with ``--resume_from_checkpoint`` loads the checkpoint
    (:func:`find_checkpoint`) and continues ``clock``. Returns the global step to continue from (0: a new run;
    ``--resume_from_checkpoint`` is set to None when there is nothing to resume)."""
    if accelerator.is_main_process:
        clear_temporary_checkpoints(args.output_dir)
    accelerator.wait_for_everyone()
    if not args.resume_from_checkpoint:
        return 0
    path = find_checkpoint(args)
    if path is None or not os.path.isdir(path):
        accelerator.print(f"Checkpoint '{args.resume_from_checkpoint}' does not exist. Starting a new training run.")
        args.resume_from_checkpoint = None
        return 0
    if missing := missing_checkpoint_files(path, args):
        raise ValueError(f"{path} is not a complete checkpoint: it lacks {', '.join(missing)}")
    accelerator.print(f"Resuming from checkpoint {path}")
    accelerator.load_state(path)
    clock.resume(path)
    return int(os.path.basename(os.path.normpath(path)).split("-")[1])


def checkpoint_and_validate(accelerator, args, step: int, clock: TrainingClock, model, validation_images):
    """What follows optimisation step ``step``: when ``--max_train_minutes`` are spent (one decision for all
    processes, so that every process stops at the same step) the run ends at this step (``args.max_train_steps``);
    a checkpoint every ``--checkpointing_steps`` and at that last step; validation of ``model`` (the unwrapped
    ``SODECTrainingModel``) every ``--validation_steps`` on the main process. Returns the validation metrics, or
    None when it did not validate."""
    out_of_time = args.max_train_minutes is not None and bool(
        accelerator.reduce(torch.tensor(float(clock() >= args.max_train_minutes), device=accelerator.device), "max")
    )
    if out_of_time:
        args.max_train_steps = step
    if step % args.checkpointing_steps == 0 or out_of_time:
        path = save_checkpoint(accelerator, args, step, clock)
        logger.info(f"Saved state to {path}")
    if validation_images and step % args.validation_steps == 0 and accelerator.is_main_process:
        return validate(model, validation_images, accelerator, step)
    return None
