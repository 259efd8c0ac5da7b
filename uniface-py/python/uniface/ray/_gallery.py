"""A gallery sharded over Ray actors (see the package's docstring)."""

from __future__ import annotations

import fcntl
import itertools
import operator
import os
import pathlib
import shutil
import threading
from collections.abc import Sequence
from typing import Any, Callable, Literal, Optional

import numpy as np
import numpy.typing as npt
import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

import uniface


#: (subject, template id, distance, similarity): a candidate as it crosses from an actor.
_Row = tuple[str, int, float, float]

Durability = Literal["sync", "group", "async"]

_STRATEGIES = ("SPREAD", "STRICT_SPREAD", "PACK", "STRICT_PACK")


class ShardUnavailableError(uniface.GalleryError):
    """A shard's actor did not answer: it died during the call (and Ray is recreating it) or
    the call timed out. A read was already retried once; a write may or may not have been
    applied — look it up (``get``) before enrolling again."""


def replica_path(root: str, replica: int) -> str:
    """The folder of a shard's copy: ``root`` for the writer (replica 0), ``root.replica-R``
    for follower ``R`` (on the follower's node)."""
    return root if replica == 0 else f"{root}.replica-{replica}"


def _open_shard(
    path: str,
    shard: int,
    shards: int,
    durability: Durability,
    ef: Optional[int],
    wait_lock: float,
    create: bool,
) -> uniface.Gallery:
    """Open shard ``shard`` of the gallery in ``path``; with ``create``, make the whole gallery
    first when the folder holds none (actors of one node create it under a lock file beside the
    folder, so that only one of them does). Without it a missing gallery is an error, never an
    empty shard: a writer Ray restarted on a node without its folder must not start afresh."""
    folder = pathlib.Path(path)
    if not create:
        if not (folder / "manifest.json").exists():
            raise uniface.GalleryError(
                f"no gallery at {path} on node {ray.get_runtime_context().get_node_id()}: a "
                f"shard's folder must be on the node its actor runs on (restore it there, or "
                f"place the actor with the folder)"
            )
        return _open_existing(path, shard, shards, durability, wait_lock)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.create-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (folder / "manifest.json").exists():
                with uniface.Gallery(path, create=True, shards=shards, durability=durability) as g:
                    if ef is not None:
                        g.set_expansion_search(ef)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return _open_existing(path, shard, shards, durability, wait_lock)


def _open_existing(
    path: str, shard: int, shards: int, durability: Durability, wait_lock: float
) -> uniface.Gallery:
    g = uniface.Gallery(path, shard=shard, durability=durability, wait_lock=wait_lock)
    if g.shards != shards:
        g.close()
        raise uniface.GalleryError(
            f"{path} holds a gallery of {g.shards} shards, not {shards}: open it with "
            f"ShardedGallery.open, or create the new one in another folder"
        )
    return g


_COMPLETE = ".copy-complete"


def _swap_names(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    return folder.with_name(folder.name + ".incoming"), folder.with_name(folder.name + ".old")


def _write_synced(path: pathlib.Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover_swap(folder: pathlib.Path) -> None:
    """Finish or undo a follower's interrupted copy (see ``_ShardActor._bootstrap``): a
    missing shard folder is replaced by the complete new copy, else by the old one; leftovers
    go."""
    fresh, old = _swap_names(folder)
    if not folder.exists():
        if (fresh / _COMPLETE).exists():
            fresh.rename(folder)
        elif old.exists():
            old.rename(folder)
    if folder.exists():
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        (folder / _COMPLETE).unlink(missing_ok=True)


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class _ShardActor:
    """One shard copy in its own process: the writer (replica 0) or a follower."""

    def __init__(
        self,
        root: str,
        shard: int,
        shards: int,
        replica: int,
        durability: Durability,
        ef: Optional[int],
        wait_lock: float,
        create: bool,
    ) -> None:
        self.path = replica_path(root, replica)
        self.shard = shard
        self.replica = replica
        self.durability = durability
        self.wait_lock = wait_lock
        self.restarted = ray.get_runtime_context().was_current_actor_reconstructed
        # a follower's copy may be made afresh (it is filled from the writer's feed); a writer's
        # only when the gallery is being created and this is not a restart
        fresh = replica > 0 or (create and not self.restarted)
        if replica > 0:
            _recover_swap(pathlib.Path(self.path) / f"shard-{shard:03}")
        self.gallery = _open_shard(self.path, shard, shards, durability, ef, wait_lock, fresh)

    # --- reads -----------------------------------------------------------------------------
    def search(self, probes: npt.NDArray[np.float32], k: int) -> tuple[list[list[_Row]], int]:
        """This shard's best ``k`` subjects for each probe, and the shard's template count
        (the open-set decision is the caller's: it needs every shard's count)."""
        found = self.gallery.identify_batch(list(probes), k=k, fmr=1e-4)
        rows = [
            [(c.subject, c.template_id, c.distance, c.similarity) for c in r.candidates]
            for r in found
        ]
        return rows, len(self.gallery)

    def verify(self, subject: str, probe: npt.NDArray[np.float32], fmr: float) -> Any:
        return self.gallery.verify(subject, probe, fmr)

    def get(self, subject: str) -> Optional[tuple[list[int], bytes]]:
        s = self.gallery.get(subject)
        return None if s is None else (s.templates, s.metadata)

    def subjects(self) -> list[str]:
        return self.gallery.subjects()

    def count(self) -> int:
        return len(self.gallery)

    def check(self) -> uniface.CheckReport:
        return self.gallery.check()

    def positions(self) -> list[int]:
        return self.gallery.positions()

    def changes_since(self, positions: list[int]) -> list[bytes]:
        return self.gallery.changes_since(positions)

    def info(self) -> dict[str, Any]:
        report = self.gallery.open_report
        return {
            "shard": self.shard,
            "replica": self.replica,
            "path": self.path,
            "node": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "restarted": self.restarted,
            "rss_bytes": _rss_bytes(),
            "templates": len(self.gallery),
            "pending": self.gallery.pending,
            "open_report": report,
        }

    # --- writes (the writer) ---------------------------------------------------------------
    def enroll_many(self, subjects: list[str], templates: npt.NDArray[np.float32]) -> list[int]:
        return self.gallery.enroll_many(subjects, list(templates))

    def remove(self, subject: str) -> int:
        return self.gallery.remove(subject)

    def remove_template(self, template_id: int) -> bool:
        return self.gallery.remove_template(template_id)

    def set_metadata(self, subject: str, metadata: bytes) -> None:
        self.gallery.set_metadata(subject, metadata)

    def index_pending(self) -> int:
        return self.gallery.index_pending()

    def set_expansion_search(self, ef: int) -> None:
        self.gallery.set_expansion_search(ef)

    def flush(self) -> None:
        self.gallery.flush()

    def checkpoint(self) -> None:
        self.gallery.checkpoint()

    def export_shard(self) -> dict[str, bytes]:
        """A copy of this shard's files for a follower that fell behind a checkpoint: the log
        made durable first, then snapshot, log and graph as they are (what a reopen after a
        crash reads). No checkpoint, so other followers are not pushed behind one too. An actor
        runs one call at a time, so nothing changes the shard while it is read."""
        self.gallery.flush()
        folder = pathlib.Path(self.path) / f"shard-{self.shard:03}"
        return {
            p.name: p.read_bytes()
            for p in folder.iterdir()
            if p.is_file() and p.name != "LOCK" and not p.name.endswith(".tmp")
        }

    # --- following (a follower) -------------------------------------------------------------
    def follow(self, writer: Any) -> int:
        """Apply the writer's changes since this copy's position; returns how many. A copy the
        writer's checkpoints left behind is replaced by a fresh copy of the writer's shard."""
        try:
            changes = ray.get(writer.changes_since.remote(self.gallery.positions()))
        except ray.exceptions.RayTaskError as e:
            if "copy the gallery" not in str(e):
                raise
            self._bootstrap(ray.get(writer.export_shard.remote()))
            changes = ray.get(writer.changes_since.remote(self.gallery.positions()))
        return self.gallery.apply_changes(changes)

    def _bootstrap(self, files: dict[str, bytes]) -> None:
        """Replace this copy's shard folder by the writer's files. The new folder is written
        beside the old one and marked complete before the two swap places, so a crash at any
        point leaves the old copy or the complete new one (``_recover_swap`` at the next start);
        if this copy cannot be reopened the process ends, and Ray's restart recovers it."""
        shards = self.gallery.shards
        self.gallery.close()
        folder = pathlib.Path(self.path) / f"shard-{self.shard:03}"
        fresh, old = _swap_names(folder)
        try:
            shutil.rmtree(fresh, ignore_errors=True)
            fresh.mkdir()
            for name, data in files.items():
                _write_synced(fresh / name, data)
            _write_synced(fresh / _COMPLETE, b"")
            _sync_dir(fresh)
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
            fresh.rename(folder)
            _sync_dir(folder.parent)
            shutil.rmtree(old)
            (folder / _COMPLETE).unlink()
        finally:
            try:
                _recover_swap(folder)
                self.gallery = _open_existing(
                    self.path, self.shard, shards, self.durability, self.wait_lock
                )
            except Exception:  # noqa: BLE001 (a follower that cannot reopen restarts)
                os._exit(1)


class ShardedGallery:
    """A gallery of ``shards`` shards, one Ray actor per shard copy.

    Use :meth:`create` or :meth:`open` (Ray must be initialised, or is started locally with
    its defaults). Every method blocks until the actors answer; results are the types the
    single-process :class:`uniface.Gallery` returns.

    Placement: ``SPREAD`` (default) spreads the actors over the cluster's nodes;
    ``STRICT_SPREAD`` puts every actor of the gallery on a different node (a placement group
    with one bundle of ``num_cpus`` per actor), ``PACK`` / ``STRICT_PACK`` keep them together.
    Each actor opens its folder on its own node: ``root`` for the writers, ``root.replica-R``
    for the followers, created there when missing.

    Failures: actors are created with ``max_restarts=-1``; one that dies is recreated by Ray
    and reopens its shard from disk (its log makes every acknowledged enrollment survive). A
    read that meets a dead actor is retried once; a write raises
    :class:`ShardUnavailableError` (it may or may not have been applied).

    Replicas: with ``replicas=R`` each shard has one writer and ``R − 1`` followers that copy
    the writer's change feed (:meth:`sync_replicas`, or every ``follow_interval`` seconds in
    the background); reads go round-robin over a shard's copies, so they may lag the writer by
    up to that interval.
    """

    def __init__(
        self,
        root: str,
        shards: int,
        actors: list[list[Any]],
        placement: Any,
        call_timeout: Optional[float],
    ) -> None:
        self.root = root
        self.router = uniface.ShardRouter(shards)
        self._actors = actors
        self._placement = placement
        self._timeout = call_timeout
        self._turn = [itertools.count() for _ in actors]
        self.retries = 0
        self._stop = threading.Event()
        self._follower: Optional[threading.Thread] = None
        #: The last failure of the background catch-up (None after a round that worked).
        self.follow_error: Optional[str] = None

    # --- making one ------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        shards: int,
        *,
        replicas: int = 1,
        durability: Durability = "sync",
        expansion_search: Optional[int] = None,
        placement: str = "SPREAD",
        num_cpus: float = 0.5,
        call_timeout: Optional[float] = 300.0,
        follow_interval: Optional[float] = 0.5,
        wait_lock: float = 30.0,
    ) -> ShardedGallery:
        """A new gallery of ``shards`` shards in ``root`` (on each actor's node), or the one
        already there when it has as many shards. ``expansion_search`` sets the graphs' ``ef``
        at creation."""
        if not 1 <= shards <= 1024:
            raise uniface.InvalidArgumentError(f"shards must be from 1 to 1024, got {shards}")
        return cls._start(
            os.fspath(root), shards, replicas, durability, expansion_search, placement,
            num_cpus, call_timeout, follow_interval, wait_lock, True,
        )  # fmt: skip

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        *,
        replicas: int = 1,
        durability: Durability = "sync",
        placement: str = "SPREAD",
        num_cpus: float = 0.5,
        call_timeout: Optional[float] = 300.0,
        follow_interval: Optional[float] = 0.5,
        wait_lock: float = 30.0,
    ) -> ShardedGallery:
        """The gallery in ``root``: its shard count is read from the manifest (on the driver's
        node when it is there, else by shard 0's actor)."""
        root = os.fspath(root)
        manifest = pathlib.Path(root) / "manifest.json"
        if manifest.exists():
            shards = _count_shards(root)
        else:
            if not ray.is_initialized():
                ray.init()
            try:
                shards = ray.get(ray.remote(_count_shards).remote(root), timeout=call_timeout)
            except ray.exceptions.RayTaskError as e:
                raise _unwrap(e) from None
        return cls._start(
            root, shards, replicas, durability, None, placement, num_cpus, call_timeout,
            follow_interval, wait_lock, False,
        )  # fmt: skip

    @classmethod
    def _start(
        cls,
        root: str,
        shards: int,
        replicas: int,
        durability: Durability,
        ef: Optional[int],
        placement: str,
        num_cpus: float,
        call_timeout: Optional[float],
        follow_interval: Optional[float],
        wait_lock: float,
        create: bool,
    ) -> ShardedGallery:
        if replicas < 1:
            raise uniface.InvalidArgumentError(f"replicas must be at least 1, got {replicas}")
        if placement not in _STRATEGIES:
            raise uniface.InvalidArgumentError(
                f"placement must be one of {', '.join(_STRATEGIES)}, not {placement!r}"
            )
        if not ray.is_initialized():
            ray.init()
        actor = ray.remote(_ShardActor)
        group = None
        if placement != "SPREAD":
            group = placement_group([{"CPU": num_cpus}] * (shards * replicas), strategy=placement)
            try:
                ray.get(group.ready(), timeout=call_timeout)
            except GetTimeoutError as e:
                remove_placement_group(group)
                raise ShardUnavailableError(
                    f"the cluster cannot place {shards * replicas} actors with {placement} "
                    f"(one bundle of {num_cpus} CPU each) within {call_timeout} s"
                ) from e
        actors: list[list[Any]] = []
        for shard in range(shards):
            copies = []
            for replica in range(replicas):
                if group is None:
                    strategy: Any = "SPREAD"
                else:
                    strategy = PlacementGroupSchedulingStrategy(
                        placement_group=group,
                        placement_group_bundle_index=shard * replicas + replica,
                    )
                copies.append(
                    actor.options(
                        max_restarts=-1,
                        max_task_retries=0,
                        num_cpus=num_cpus,
                        scheduling_strategy=strategy,
                    ).remote(root, shard, shards, replica, durability, ef, wait_lock, create)
                )
            actors.append(copies)
        g = cls(root, shards, actors, group, call_timeout)
        # every actor opened (an error in a constructor surfaces here, naming the folder)
        g._wait([a.info.remote() for copies in actors for a in copies])
        g.sync_replicas()
        if follow_interval is not None and replicas > 1:
            g._follower = threading.Thread(
                target=g._follow_loop, args=(follow_interval,), daemon=True
            )
            g._follower.start()
        return g

    # --- calling the actors ----------------------------------------------------------------
    def _wait(self, refs: list[Any]) -> list[Any]:
        try:
            return list(ray.get(refs, timeout=self._timeout))
        except RayActorError as e:
            if getattr(e, "actor_init_failed", False):
                # the shard could not be opened (no folder, another writer, another shard
                # count): permanent, not a restart to wait for
                raise uniface.GalleryError(f"a shard's actor could not open its shard: {e}") from e
            raise ShardUnavailableError(f"a shard's actor died: {e}") from e
        except GetTimeoutError as e:
            raise ShardUnavailableError(f"no answer within {self._timeout} s") from e
        except ray.exceptions.RayTaskError as e:
            raise _unwrap(e) from None
        except ray.exceptions.RayError as e:
            raise ShardUnavailableError(f"Ray could not complete the call: {e}") from e

    def _read(self, shard: int, call: Callable[[Any], Any]) -> Any:
        """A read on one of the shard's copies (round-robin), retried once on a dead actor."""
        copies = self._actors[shard]
        turn = next(self._turn[shard])
        try:
            return self._wait([call(copies[turn % len(copies)])])[0]
        except ShardUnavailableError:
            self.retries += 1
            return self._wait([call(copies[(turn + 1) % len(copies)])])[0]

    def _scatter(self, call: Callable[[Any], Any]) -> list[Any]:
        """A read on every shard (one copy each), gathered; each shard retried once."""
        turns = [next(t) for t in self._turn]
        refs = [call(c[turn % len(c)]) for c, turn in zip(self._actors, turns)]
        try:
            return self._wait(refs)
        except ShardUnavailableError:
            self.retries += 1
        # the shards that answered keep their answers; the others are asked once more, on
        # their next copy and all together
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        done = {r.hex() for r in ready}
        out: list[Any] = [None] * len(refs)
        again = []
        for shard, ref in enumerate(refs):
            try:
                if ref.hex() not in done:
                    raise ShardUnavailableError("no answer")
                out[shard] = self._wait([ref])[0]
            except ShardUnavailableError:
                again.append(shard)
        retried = self._wait(
            [call(self._actors[i][(turns[i] + 1) % len(self._actors[i])]) for i in again]
        )
        for shard, answer in zip(again, retried):
            out[shard] = answer
        return out

    def _write(self, shard: int, call: Callable[[Any], Any]) -> Any:
        return self._wait([call(self._actors[shard][0])])[0]

    def _writers(self, call: Callable[[Any], Any]) -> list[Any]:
        return self._wait([call(copies[0]) for copies in self._actors])

    # --- the gallery's operations ------------------------------------------------------------
    @property
    def shards(self) -> int:
        return len(self._actors)

    def enroll(self, subject: str, template: Any) -> int:
        """Enroll a template for ``subject`` on its shard; returns the template id once it is
        durable there."""
        return self.enroll_many([subject], [template])[0]

    def enroll_many(self, subjects: Sequence[str], templates: Any) -> list[int]:
        """Enroll many at once: one batch per shard, the shards in parallel; ids in input
        order."""
        vectors = _matrix(templates)
        if len(subjects) != len(vectors):
            raise uniface.InvalidArgumentError(
                f"{len(subjects)} subjects for {len(vectors)} templates"
            )
        # what a shard would refuse is refused here, before any shard commits (a single
        # gallery's enroll_many commits all or nothing; shards commit one by one)
        if not (np.isfinite(vectors).all() and (np.abs(vectors) <= 1024.0).all()):
            raise uniface.TemplateError(
                "a template holds a NaN, an infinite value or one beyond ±1024"
            )
        for s in subjects:
            if not isinstance(s, str) or not s or len(s.encode()) > 1024:
                raise uniface.InvalidArgumentError(
                    f"subject ids must be non-empty strings of at most 1024 bytes, got {s!r}"
                )
        by_shard: dict[int, list[int]] = {}
        for i, s in enumerate(subjects):
            by_shard.setdefault(self.router.shard_of(s), []).append(i)
        order = list(by_shard.items())
        refs = [
            self._actors[shard][0].enroll_many.remote(
                [subjects[i] for i in rows], vectors[np.asarray(rows)]
            )
            for shard, rows in order
        ]
        ids = [0] * len(subjects)
        for (_, rows), got in zip(order, self._wait(refs)):
            for i, tid in zip(rows, got):
                ids[i] = tid
        return ids

    def identify(
        self, probe: Any, k: int = 5, fmr: float = 1e-4, fpir: Optional[float] = None
    ) -> uniface.Identification:
        """Who is this? Every shard's best ``k`` subjects merged, and the known/unknown decision
        of the single-process gallery (``fpir`` spread over the templates of all shards)."""
        return self.identify_batch(_matrix([probe]), k=k, fmr=fmr, fpir=fpir)[0]

    def identify_batch(
        self, probes: Any, k: int = 5, fmr: float = 1e-4, fpir: Optional[float] = None
    ) -> list[uniface.Identification]:
        """``identify`` for many probes: one call per shard for the whole batch."""
        k = _count("k", k)
        if fpir is not None and not 0.0 < fpir < 1.0:
            raise uniface.InvalidArgumentError(f"fpir must lie in (0, 1), got {fpir}")
        if fpir is None:
            uniface.threshold_for_fmr(fmr)  # an fmr the calibration cannot resolve: refused now
        matrix = _matrix(probes)
        answers = self._scatter(lambda a: a.search.remote(matrix, k))
        total = sum(n for _, n in answers)
        fmr = uniface.per_comparison_fmr(fpir, total) if fpir is not None else fmr
        threshold = uniface.threshold_for_fmr(fmr)
        out = []
        for i in range(len(matrix)):
            found = [uniface.Candidate(*row) for rows, _ in answers for row in rows[i]]
            merged = uniface.merge_candidates(found, k)
            known = merged[0].subject if merged and merged[0].distance < threshold else None
            out.append(uniface.Identification(merged, known, threshold, fmr, fpir))
        return out

    def verify(self, subject: str, probe: Any, fmr: float = 1e-4) -> Optional[uniface.Decision]:
        """1:1 against ``subject``'s closest template, on the subject's shard."""
        vector = _matrix([probe])[0]
        shard = self.router.shard_of(subject)
        result: Optional[uniface.Decision] = self._read(
            shard, lambda a: a.verify.remote(subject, vector, fmr)
        )
        return result

    def get(self, subject: str) -> Optional[tuple[list[int], bytes]]:
        """``(template ids, metadata)`` of ``subject``, or None — from the shard's writer, never
        a follower, so that it answers whether an enrollment went through (retried once)."""
        shard = self.router.shard_of(subject)
        call = lambda a: a.get.remote(subject)  # noqa: E731
        try:
            result: Optional[tuple[list[int], bytes]] = self._write(shard, call)
        except ShardUnavailableError:
            self.retries += 1
            result = self._write(shard, call)
        return result

    def set_metadata(self, subject: str, metadata: bytes) -> None:
        self._write(self.router.shard_of(subject), lambda a: a.set_metadata.remote(subject, metadata))

    def remove(self, subject: str) -> int:
        """Remove a subject and its templates; returns how many templates went."""
        removed: int = self._write(
            self.router.shard_of(subject), lambda a: a.remove.remote(subject)
        )
        return removed

    def remove_template(self, template_id: int) -> bool:
        """Remove one template (its id names its shard: ids are striped by shard)."""
        done: bool = self._write(
            template_id % self.shards, lambda a: a.remove_template.remote(template_id)
        )
        return done

    def subjects(self) -> list[str]:
        return sorted(itertools.chain.from_iterable(self._scatter(lambda a: a.subjects.remote())))

    def __len__(self) -> int:
        return sum(self._scatter(lambda a: a.count.remote()))

    def check(self) -> tuple[uniface.CheckReport, list[uniface.CheckReport]]:
        """Every writer's shard checked: the merged report and one per shard (problems and
        notes of the merged report name their shard)."""
        each: list[uniface.CheckReport] = self._writers(lambda a: a.check.remote())
        merged = uniface.CheckReport(
            self.shards,
            sum(r.subjects for r in each),
            sum(r.templates for r in each),
            [f"shard {i}: {p}" for i, r in enumerate(each) for p in r.problems],
            [f"shard {i}: {n}" for i, r in enumerate(each) for n in r.notes],
        )
        return merged, each

    def index_pending(self) -> int:
        """Move pending templates into the shards' graphs (all shards at once)."""
        return sum(self._writers(lambda a: a.index_pending.remote()))

    def set_expansion_search(self, ef: int) -> None:
        """Set ``ef`` on every copy, one at a time (each copy writes its manifest)."""
        for copies in self._actors:
            for a in copies:
                self._wait([a.set_expansion_search.remote(ef)])

    def flush(self) -> None:
        self._writers(lambda a: a.flush.remote())

    def checkpoint(self) -> None:
        self._writers(lambda a: a.checkpoint.remote())

    def info(self) -> list[list[dict[str, Any]]]:
        """Per shard, per copy: node, pid, whether Ray restarted it, memory (RSS), templates."""
        return [self._wait([a.info.remote() for a in copies]) for copies in self._actors]

    def actor(self, shard: int, replica: int = 0) -> Any:
        """The Ray actor handle of one shard copy (to place, watch or kill it)."""
        return self._actors[shard][replica]

    def sync_replicas(self) -> int:
        """Bring every follower up to its writer now; returns the changes applied."""
        refs = [f.follow.remote(copies[0]) for copies in self._actors for f in copies[1:]]
        return sum(self._wait(refs)) if refs else 0

    def _follow_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sync_replicas()
                self.follow_error = None
            except Exception as e:  # noqa: BLE001 (kept for the caller; the next round retries)
                self.follow_error = f"{type(e).__name__}: {e}"

    def close(self) -> None:
        """Flush every shard and end the actors (their folders stay)."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join()
        try:
            self.flush()
        finally:
            for copies in self._actors:
                for a in copies:
                    ray.kill(a, no_restart=True)
            if self._placement is not None:
                remove_placement_group(self._placement)

    def __enter__(self) -> ShardedGallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        copies = len(self._actors[0]) if self._actors else 0
        return f"ShardedGallery({self.root!r}, shards={self.shards}, replicas={copies})"


def _count_shards(root: str) -> int:
    if not (pathlib.Path(root) / "manifest.json").exists():
        raise uniface.GalleryError(
            f"no gallery at {root} on node {ray.get_runtime_context().get_node_id()}"
        )
    g = uniface.Gallery(root, read_only=True)
    try:
        return g.shards
    finally:
        g.close()


_MODEL = uniface.Template(np.zeros(128, np.float32)).model_id


def _row(t: Any) -> npt.NDArray[np.float32]:
    if isinstance(t, uniface.Template):
        if t.model_id != _MODEL:
            raise uniface.TemplateError(
                f"a template of model {t.model_id} for a gallery of {_MODEL}: compare templates "
                f"of one model only"
            )
        return t.vector
    try:
        return np.asarray(t, np.float32)
    except (TypeError, ValueError) as e:
        raise uniface.InvalidArgumentError(f"not an embedding: {e}") from e


def _matrix(templates: Any) -> npt.NDArray[np.float32]:
    """Templates, embeddings or rows as one float32 matrix of 128 columns (what the actors
    receive); anything else is refused here, before a shard is called."""
    if isinstance(templates, np.ndarray):
        if templates.ndim != 2:
            raise uniface.InvalidArgumentError(
                f"a batch of embeddings is a 2-D array (n × 128), got shape {templates.shape}"
            )
        m = np.ascontiguousarray(templates, dtype=np.float32)
    else:
        rows = [_row(t) for t in templates]
        if not rows:
            return np.zeros((0, 128), np.float32)
        if any(r.shape != (128,) for r in rows):
            bad = next(r.shape for r in rows if r.shape != (128,))
            raise uniface.InvalidArgumentError(f"an embedding has 128 values, got shape {bad}")
        m = np.ascontiguousarray(np.stack(rows), dtype=np.float32)
    if m.shape[1] != 128:
        raise uniface.InvalidArgumentError(f"an embedding has 128 values, got {m.shape[1]}")
    return m


def _count(name: str, k: Any) -> int:
    try:
        n = operator.index(k)
    except TypeError as e:
        raise uniface.InvalidArgumentError(f"{name} must be an integer, got {k!r}") from e
    if not 0 <= n < 2**63:
        raise uniface.InvalidArgumentError(f"{name} must be from 0 to 2**63 - 1, got {n}")
    return n


def _unwrap(e: Any) -> BaseException:
    """The library's own exception inside a Ray task error (so callers catch
    ``uniface.GalleryError`` and its kin as with a local gallery)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, uniface.UniFaceError):
        return cause
    if isinstance(cause, (TypeError, ValueError, OverflowError)):
        return uniface.InvalidArgumentError(str(cause))
    return uniface.GalleryError(str(e))
