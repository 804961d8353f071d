"""The stage behind ``detkit train``: a run directory from a dataset and options.

Stage 1 (default: body frozen, lr 1e-3) trains the heads of a detector that usually
starts from pretrained ``--weights``; stage 2 (default: nothing frozen, lr 1e-4)
fine-tunes everything from stage 1's weights. Both are one :func:`run_training` call:
it opens a :class:`RunContext` (datasets, anchors, settings, resume state), asks the
:class:`~detkit.training.objective.Objective` (plain, or distillation) what it adds,
then builds and fits each phase's plan (:mod:`detkit.training.phases`).

The optimizer is Adam with global gradient-norm clipping, a linear warmup and then a
cosine decay (``schedule="cosine"``) or ``ReduceLROnPlateau`` (``"plateau"``), and an
optional EMA of the weights (checkpoints and validation then use the averages); see
:mod:`detkit.training.fit`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import keras
import numpy as np

from detkit.artifacts import (CHECKPOINT_FILES, RUN_MANIFEST, DetkitWarning, Note,
                              check_agree, check_fresh, check_run_folder, check_writable,
                              library_versions, nothing_to_resume, read_manifest,
                              remove_stale_temps, run_files, run_lock, sha256_file,
                              write_json, write_manifest)
from detkit.data.dataset import Dataset, load_dataset, names_split
from detkit.data.records import annotations_sha256
from detkit.errors import ArtifactError, Interrupted, UsageError, interrupted
from detkit.families import get_family
from detkit.labels import load_labels
from detkit.models.recorded import resolve_anchors
from detkit.options import as_config
from detkit.tables import plural
from detkit.training.board import TENSORBOARD_DIR, tensorboard_available
from detkit.training.callbacks import (BEST_WEIGHTS, HISTORY_CSV, LAST_WEIGHTS,
                                       read_history, read_state, trim_history)
from detkit.training.distributed import (is_chief, release_run_dir,
                                         worker_run_dir)
from detkit.training.monitor import MONITOR_KEYS, image_phase_best, worst_value
from detkit.training.objective import Objective
from detkit.training.phases import cached_features_plan, fit_plan, images_plan

if TYPE_CHECKING:  # the train command's options (the stage reads their attributes)
    from detkit.commands.train import Options as TrainOptions
    from detkit.families import Family

#: Settings a resumed run must share with the run it continues.
RESUME_KEYS = ("model", "width", "backbone", "stage", "input_size", "anchors",
               "class_names", "monitor")
#: Settings stage 2's ``--weights`` must share with it (from the weights' manifest).
STAGE2_KEYS = ("model", "backbone", "anchors", "class_names")
#: Name of the run manifest.
MANIFEST = RUN_MANIFEST


@dataclasses.dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        run_dir: the run directory.
        epochs_run: epochs trained by this call (0 when a resumed run was complete).
        start_epoch: epochs already done before this call (``--resume``).
        total_epochs: epochs the run now holds.
        monitor: the value that picked ``best`` (``loss``, ``val_loss``, ``val_map``,
            ``val_map50`` or ``val_fitness``).
        best: the best ``monitor`` value and its 1-based epoch.
        history: rows of ``history.csv`` (all epochs of the run), as dicts of floats.
        stopped_early: ``EarlyStopping`` ended the run.
        weights_report: what ``--weights`` loaded (``LoadReport.summary()``), if given.
        notes: warnings worth showing (frozen random body, skipped layers, dataset fixes).
        notes_told: how many of ``notes`` were warned (``DetkitWarning``) during the run,
            before its epochs; the rest came after.
        files: the files written.
        final_map: COCO figures of ``best.weights.h5`` on ``--val`` (``AP``, ``AP50``,
            ... as eval-map's report) when the end-of-run curves were made, else ``None``.
    """

    run_dir: Path
    epochs_run: int
    start_epoch: int
    total_epochs: int
    monitor: str
    best: float
    best_epoch: int
    history: list[dict[str, float]]
    stopped_early: bool = False
    weights_report: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    files: list[Path] = dataclasses.field(default_factory=list)
    final_map: Optional[dict[str, float]] = None
    notes_told: int = 0


@dataclasses.dataclass
class RunContext:
    """What every phase of a run shares, known before any file is written.

    Attributes:
        opts: the resolved options (stage defaults filled in).
        family: the detector family of ``opts.model``.
        records, val_records: training and validation images (``None``: no ``--val``);
            val_dataset: the whole validation dataset (the mAP's ground truth).
        class_names: the dataset's classes; anchors: ``(K, 2)`` input pixels, read from
            anchors_path (``None``: recorded with stage 2's ``--weights``).
        monitor: the logged key of ``--monitor`` (``val_loss``, ``val_map``, ...) with
            ``--val``, else ``loss``.
        log_dir: the TensorBoard folder (``None``: tensorboard is not installed).
        labels: ``--labels`` opened and checked against the run (``None`` without).
        settings: what the manifests and ``state.json`` record (and ``--resume`` checks).
        notes: warnings collected for the user; told: how many of them were warned
            already (:meth:`tell_notes`).
        state: the resume state (``None``: a new run); start_epoch, best, best_epoch
            from it.
    """

    opts: Any
    family: "Family"
    records: list
    val_records: Optional[list]
    class_names: list[str]
    anchors: np.ndarray
    anchors_path: Optional[Path]
    monitor: str
    settings: dict[str, Any]
    notes: list[str]
    state: Optional[dict] = None
    start_epoch: int = 0
    best: float = math.inf
    best_epoch: int = 0
    val_dataset: Any = None
    log_dir: Optional[Path] = None
    labels: Any = None
    told: int = 0

    @property
    def run_dir(self) -> Path:
        """The run directory (``--out``)."""
        return self.opts.out

    @property
    def cache_epochs(self) -> int:
        """Epochs of the cached-feature phase (0 without ``--bottlenecks``)."""
        return self.opts.total_epochs - self.opts.epochs

    @classmethod
    def open(cls, opts: "TrainOptions") -> "RunContext":
        """Resolve options, datasets and anchors of a run.

        Raises:
            UsageError, DataError, ArtifactMismatchError: see :func:`run_training`.
        """
        start_notes = opts.start_notes()
        opts = opts.resolved()
        for artifact in (opts.labels, opts.bottlenecks):  # before any long work
            if artifact is not None:
                check_fresh(artifact)
        family = get_family(opts.model)
        # a missing image: one error now, not mid-epoch (validation always reads images)
        dataset, crowd_note = load_dataset(opts.data, opts.format, opts.classes,
                                           check_images=opts.epochs > 0).for_training()
        class_names = list(dataset.class_names)
        val_dataset = (load_dataset(opts.val, opts.format, class_names, split="val",
                                    check_images=True)
                       if opts.val is not None else None)
        if opts.val is None and names_split(opts.data, "val"):
            val_dataset = _own_val_split(opts, class_names, start_notes)
        anchors, anchors_path = resolve_anchors(family, opts.anchors, opts.recorded_start())
        default_note = family.default_anchors_note(anchors_path, opts.input_size)
        if opts.anchors is None and default_note:
            start_notes.append(default_note)
        labels = None
        if opts.labels is not None:      # all of its checks before the run directory
            labels = load_labels(
                opts.labels, settings={"anchors": anchors, "input_size": opts.input_size,
                                       "class_names": class_names},
                image_paths=[str(record.image_path) for record in dataset.records],
                annotations=annotations_sha256(dataset.records, class_names))
        monitor = MONITOR_KEYS[opts.monitor] if val_dataset is not None else "loss"
        notes = start_notes + [summary for summary in (dataset.fixes.summary(),) if summary]
        if crowd_note is not None:
            notes.append(Note(crowd_note))
        log_dir = opts.out / TENSORBOARD_DIR
        if not tensorboard_available():
            log_dir = None
            notes.append("no TensorBoard logs: the tensorboard package is not installed "
                         "(pip install tensorboard)")
        settings = {"model": opts.model, "width": opts.width,
                    "backbone": family.resolve_backbone(opts.backbone), "stage": opts.stage,
                    "input_size": opts.input_size, "anchors": anchors.tolist(),
                    "class_names": class_names, "monitor": monitor}
        return cls(opts=opts, family=family, records=dataset.records,
                   val_records=val_dataset.records if val_dataset is not None else None,
                   class_names=class_names, anchors=anchors, anchors_path=anchors_path,
                   monitor=monitor, settings=settings, notes=notes,
                   best=worst_value(monitor), val_dataset=val_dataset, log_dir=log_dir,
                   labels=labels)

    def tell_notes(self) -> None:
        """Warn (:class:`detkit.artifacts.DetkitWarning`) with the notes not told yet (a
        frozen random body, a taken-over lock, the val split used), and count them in
        :attr:`told`. Called before a phase's epochs, so the user reads them while it
        trains, not after."""
        for note in self.notes[self.told:]:
            warnings.warn(note, DetkitWarning, stacklevel=2)
        self.told = len(self.notes)

    def read_resume_state(self, extra_keys: Sequence[str]) -> None:
        """With ``--resume``, read the run directory's state and check it agrees.

        Raises:
            ArtifactMismatchError: a setting differs from the run being resumed.
        """
        if not self.opts.resume:
            return
        self.state = read_state(self.run_dir)
        if self.state is None:
            raise nothing_to_resume(self.run_dir)
        check_agree(str(self.run_dir / "state.json"), self.state, "this command",
                    self.settings, keys=RESUME_KEYS + tuple(extra_keys))
        self.start_epoch = int(self.state["epoch"])
        self.best = float(self.state.get("best", worst_value(self.monitor)))
        self.best_epoch = int(self.state.get("best_epoch", 0))


def _own_val_split(opts: "TrainOptions", class_names: list[str],
                   notes: list[str]) -> Optional[Dataset]:
    """The val split of dataset file ``opts.data`` (Ultralytics' habit), or ``None`` with
    a note when it has no labels to read (images only)."""
    try:
        val_dataset = load_dataset(opts.data, opts.format, class_names, split="val",
                                   check_images=True)
    except UsageError as err:
        notes.append(f"not validating: the val split of {opts.data} is not a dataset "
                     f"({err})")
        return None
    notes.append(Note(f"validating on the val split of {opts.data}"))
    return val_dataset


def run_training(opts: "TrainOptions", *, callbacks: Sequence[keras.callbacks.Callback] = (),
                 config: dict | None = None,
                 objective_for: Callable[[RunContext], Objective] | None = None
                 ) -> TrainResult:
    """Train one stage end to end and write the run directory.

    The run directory is held by a lock file for the whole run (a second run into it
    stops, naming the holder; a dead holder's lock is taken over with a note). A new run
    into a directory that holds one is refused unless ``--resume`` or ``--exist-ok``;
    temporary files an interrupted run left there are removed.

    Args:
        opts: the options (stage defaults are filled in by their ``resolved()``).
        callbacks: extra Keras callbacks (e.g. a progress display).
        config: the command's config to record in the manifests (the resolved options
            are recorded over it).
        objective_for: makes the run's objective from its context, before any file is
            written (``distill``'s teacher); ``None``: the plain detection loss.

    Raises:
        UsageError: bad option values.
        DataError: unreadable dataset, anchors or class names.
        ArtifactError, ArtifactMismatchError: unusable ``--weights`` or resume state,
            an unwritable ``--out``, a run directory another run holds.
        TrainingError: NaN/Inf loss.
    """
    opts = opts.with_run_options()        # --resume: the run's own options, for every worker
    run_dir = Path(opts.out)
    check_writable(run_dir, folder=True)
    if is_chief():                          # before the data: a mistyped --out
        check_run_folder(run_dir, resume=opts.resume,
                         exist_ok=getattr(opts, "exist_ok", False))
    if opts.strategy == "multi-worker" and not is_chief():
        # Another worker holds --out: this one writes a scratch copy, removed after.
        scratch = worker_run_dir(run_dir, resume=opts.resume)
        try:
            return _run_locked(dataclasses.replace(opts, out=scratch, exist_ok=True),
                               callbacks=callbacks, config=config,
                               objective_for=objective_for, notes=[])
        finally:
            release_run_dir(scratch, run_dir)
    made = _missing_folders(run_dir)       # the run folder and parents this run creates
    try:
        with run_lock(run_dir, command="train") as notes:
            check_run_folder(run_dir, resume=opts.resume,     # again, holding the folder
                             exist_ok=getattr(opts, "exist_ok", False))
            removed = remove_stale_temps(run_dir)
            if removed:
                notes.append(f"removed {len(removed)} temporary file(s) an interrupted run "
                             f"left in {run_dir} ({', '.join(p.name for p in removed[:3])})")
            try:
                return _run_locked(opts, callbacks=callbacks, config=config,
                                   objective_for=objective_for, notes=notes)
            except BaseException:
                if made:                     # this run made the folder and holds it
                    _remove_unkept_run(run_dir)
                raise
    finally:
        for folder in made:        # nothing was written: leave no empty folder behind
            if not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_unkept_run(run_dir: Path) -> None:
    """The files of a new run that failed before keeping an epoch (its manifest, logs).

    Only the files a run writes go: anything else in the folder (a ``--teacher-cache``
    written there, the user's own files) stays, and so does the lock file, which the
    lock's release removes with the folder when it is empty.
    """
    if any((run_dir / name).exists() for name in CHECKPOINT_FILES):
        return
    _remove_run_files(run_dir)
    remove_stale_temps(run_dir)


def _remove_run_files(run_dir: Path) -> list[Path]:
    """Remove the run files, pictures and TensorBoard logs of ``run_dir``; returns the run
    files (:data:`~detkit.artifacts.RUN_FILES`) that were there."""
    from detkit.training.results import PLOT_FILES

    removed = [path for path in run_files(run_dir) if path.exists()]
    for path in removed:
        path.unlink()
    for name in PLOT_FILES:
        (run_dir / name).unlink(missing_ok=True)
    if (run_dir / TENSORBOARD_DIR).is_dir():
        shutil.rmtree(run_dir / TENSORBOARD_DIR)
    return removed


def _run_locked(opts: "TrainOptions", *, callbacks: Sequence[keras.callbacks.Callback],
                config: dict | None, objective_for: Callable[[RunContext], Objective] | None,
                notes: list[str]) -> TrainResult:
    """:func:`run_training` once the run directory is held."""
    ctx = RunContext.open(opts)
    ctx.notes[:0] = notes
    objective = objective_for(ctx) if objective_for is not None else Objective()
    check_multi_scale(ctx, objective)
    ctx.settings.update(objective.settings)
    ctx.read_resume_state(tuple(objective.settings))
    opts, run_dir = ctx.opts, ctx.run_dir
    if ctx.start_epoch >= opts.total_epochs:
        _, rows = read_history(run_dir / HISTORY_CSV)
        return TrainResult(run_dir, 0, ctx.start_epoch, ctx.start_epoch, ctx.monitor,
                           ctx.best, ctx.best_epoch, _float_rows(rows), notes=ctx.notes + [
                               f"the run already holds {plural(ctx.start_epoch, 'epoch')} "
                               f"(--epochs {opts.total_epochs}): nothing to do"])

    if getattr(opts, "exist_ok", False) and ctx.state is None:
        _replace_run(ctx)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {**(config or {}), **as_config(opts)}
    validation = None if ctx.val_dataset is None else Path(ctx.val_dataset.path)
    inputs = [p for p in dict.fromkeys((opts.data, opts.val, validation, ctx.anchors_path,
                                        opts.classes, opts.weights, opts.labels,
                                        opts.backbone_weights_file))
              if p is not None and Path(p).is_file()]
    inputs += objective.inputs
    on_saved = _manifest_writer(ctx, objective.command, config, inputs)
    previous_policy = keras.config.dtype_policy()
    keras.utils.set_random_seed(opts.seed)
    keras.config.set_dtype_policy(opts.precision)
    try:
        _check_stage2_weights(ctx)

        manifest = _run_manifest(config, ctx.settings, opts, inputs, objective.command,
                                 validation)
        if ctx.state is not None:           # resumed: keep what the epochs before ran with
            manifest["resumed"] = _resumes(run_dir, config, ctx.start_epoch,
                                           getattr(opts, "given", None))
        write_json(run_dir / MANIFEST, manifest)
        try:
            outcome, report = _fit_phases(ctx, objective, on_saved, callbacks)
        except BaseException as err:
            if not interrupted(err):
                raise
            raise Interrupted(_kept(ctx)) from None
    finally:
        keras.config.set_dtype_policy(previous_policy)
    checkpoint = outcome["checkpoint"]
    _, rows = read_history(run_dir / HISTORY_CSV)
    files = [run_dir / name for name in (BEST_WEIGHTS, LAST_WEIGHTS, HISTORY_CSV, MANIFEST)
             if (run_dir / name).exists()]
    final_map = None
    if opts.plots and (opts.strategy != "multi-worker" or is_chief()):
        from detkit.training.results import write_run_plots

        plots, final_map = write_run_plots(ctx, _float_rows(rows))
        files += plots
    if ctx.log_dir is not None and ctx.log_dir.is_dir():
        files.append(ctx.log_dir)
    return TrainResult(run_dir, checkpoint.last_epoch - ctx.start_epoch, ctx.start_epoch,
                       checkpoint.last_epoch, ctx.monitor, checkpoint.best,
                       checkpoint.best_epoch, _float_rows(rows),
                       stopped_early=outcome["stopped_early"], weights_report=report,
                       notes=ctx.notes, files=files, final_map=final_map,
                       notes_told=ctx.told)


def check_multi_scale(ctx: RunContext, objective: Objective) -> None:
    """Refuse a ``--multi-scale`` run this command cannot train (before any file is
    written; the options have checked the family, ``--bottlenecks`` and ``--strategy``).

    Raises:
        UsageError: a distillation objective (its teacher runs at one input size), or
            fewer than two batches per epoch (Keras's TensorFlow adapter reads the batch
            shape from the first two batches, which must differ in side).
    """
    opts = ctx.opts
    if not opts.multi_scale:
        return
    flag = f"--multi-scale {opts.multi_scale:g}"
    if objective.command != "train":
        raise UsageError(f"{flag} is not supported by {objective.command} (its teacher "
                         f"runs at one input size)")
    batches = math.ceil(len(ctx.records) / opts.batch_size)
    if opts.steps_per_epoch and opts.steps_per_epoch < min(batches, 2):
        raise UsageError(f"{flag} needs at least 2 batches per epoch (this run has "
                         f"--steps-per-epoch {opts.steps_per_epoch}); raise "
                         f"--steps-per-epoch")
    if batches < 2:
        raise UsageError(f"{flag} needs at least 2 batches per epoch (this run has "
                         f"{batches}: {len(ctx.records)} images, --batch-size "
                         f"{opts.batch_size}); lower --batch-size")


def _kept(ctx: RunContext) -> str:
    """What an interrupted run keeps, and how to continue it."""
    try:
        state = read_state(ctx.run_dir)
    except ArtifactError:
        state = None
    if state is None:
        return "no epoch finished: nothing of this run is kept"
    trim_history(ctx.run_dir / HISTORY_CSV, int(state["epoch"]))   # as the run keeps it
    return (f"{ctx.run_dir} keeps {int(state['epoch'])} of {ctx.opts.total_epochs} epochs; "
            f"the same command with --resume continues it")


def _fit_phases(ctx: RunContext, objective: Objective, on_saved: Callable,
                callbacks: Sequence) -> tuple[dict[str, Any], Optional[str]]:
    """Fit the cached-feature phase (if any, and not done), then the image phase.

    Returns:
        ``(the last phase's fit outcome, how the initial weights loaded)``.
    """
    opts, cache_epochs = ctx.opts, ctx.cache_epochs
    best, best_epoch = ctx.best, ctx.best_epoch
    outcome: dict[str, Any] = {"stopped_early": False}
    report = None
    if ctx.start_epoch < cache_epochs:
        plan = cached_features_plan(ctx, resuming=ctx.state is not None)
        outcome = fit_plan(plan, ctx, best=best, best_epoch=best_epoch, on_saved=on_saved,
                           callbacks=callbacks)
        report = plan.report
        best, best_epoch = outcome["checkpoint"].best, outcome["checkpoint"].best_epoch
    if opts.epochs and not outcome["stopped_early"]:
        # The image phase resumes its own state only once it has finished an epoch;
        # after a cached-feature phase it starts from that phase's last weights.
        if cache_epochs:
            best, best_epoch = image_phase_best(ctx.monitor, best, best_epoch, cache_epochs)
        plan = images_plan(ctx, objective, start_epoch=max(ctx.start_epoch, cache_epochs),
                           resuming=ctx.state is not None and ctx.start_epoch > cache_epochs,
                           weights=opts.weights if not cache_epochs
                           else ctx.run_dir / LAST_WEIGHTS)
        outcome = fit_plan(plan, ctx, best=best, best_epoch=best_epoch, on_saved=on_saved,
                           callbacks=callbacks)
        if not cache_epochs:   # after cached features it loads the run's own weights
            report = plan.report
    return outcome, report


def _replace_run(ctx: RunContext) -> None:
    """``--exist-ok``: remove the files of the run being replaced (after every check, so a
    refused run loses nothing), so none of them is taken for the new run's."""
    replaced = _remove_run_files(ctx.run_dir)
    if replaced:
        ctx.notes.append(Note(f"--exist-ok: replaced the run in {ctx.run_dir} "
                              f"({len(replaced)} files)"))


def _check_stage2_weights(ctx: RunContext) -> None:
    """Stage 2 continues stage 1: its ``--weights`` manifest must agree (new runs)."""
    opts = ctx.opts
    if opts.stage == 2 and opts.weights is not None and ctx.state is None:
        check_agree(str(opts.weights), read_manifest(opts.weights), "this command",
                    ctx.settings, keys=STAGE2_KEYS)


def _manifest_writer(ctx: RunContext, command: str, config: dict,
                     inputs: list[Path]) -> Callable[[Path, int, dict], None]:
    """``on_saved(path, epoch, logs)``: the manifest of a checkpoint just written."""
    def on_saved(path: Path, epoch: int, logs: dict) -> None:
        write_manifest(path, command=command, config=config, inputs=inputs,
                       seed=ctx.opts.seed, extra={**ctx.settings, "epoch": epoch,
                              "metrics": {k: float(v) for k, v in logs.items()}})
    return on_saved


def _run_manifest(config: dict, settings: dict, opts: TrainOptions, inputs: list[Path],
                  command: str = "train", validation: Optional[Path] = None) -> dict[str, Any]:
    """The run's manifest.json: options, settings, inputs with their sha256, and the
    dataset validated on (``--val``, or the data file's own val split; ``None``: none)."""
    return {"artifact": opts.out.name, "command": command, "config": config, **settings,
            "validation": None if validation is None else str(validation),
            "num_classes": len(settings["class_names"]), "seed": opts.seed,
            "inputs": {str(p): sha256_file(p) for p in inputs},
            "versions": library_versions(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")}


def _resumes(run_dir: Path, config: dict, epoch: int,
             given: Optional[frozenset[str]]) -> list[dict[str, Any]]:
    """The run manifest's record of its resumes, this one added: the epoch it continued
    from and each option given another value, ``{name: [before, now]}`` (``given``: the
    options set on this command line; ``None``: any that differs)."""
    try:
        before = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = None
    before = before if isinstance(before, dict) else {}
    old = before.get("config") if isinstance(before.get("config"), dict) else {}
    changed = {name: [old[name], value] for name, value in config.items()
               if name in old and old[name] != value and name not in ("resume", "exist_ok")
               and (given is None or name in given)}
    earlier = before.get("resumed") if isinstance(before.get("resumed"), list) else []
    return [*earlier, {"epoch": int(epoch), "changed": changed}]


def _float_rows(rows: list[dict[str, str]]) -> list[dict[str, float]]:
    out = []
    for row in rows:
        item = {}
        for key, value in row.items():
            try:
                item[key] = float(value)
            except (TypeError, ValueError):
                item[key] = math.nan
        out.append(item)
    return out
