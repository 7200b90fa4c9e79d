"""One mechanism for every folder a ppvi command writes: who owns it, what is finished, what is foreign.

A privacy tool must never call a folder "protected" when part of it is raw, half-made or made with
other settings. So a run folder belongs to one run *identity* (command, method, parameters, seed,
inputs; the shards of one run share it), and its bookkeeping lives in `OUT/.ppvi/` (hidden, so a
mirror read as a dataset later never takes it for data):

  run.json        the identity, created once (atomically, create-if-absent) before the first output
  lock            every writer holds a shared flock on it; cleaning temp files needs it alone
  <part>.lock     one writer per part (a shard): an exclusive flock; it holds the writer's pid and command
  <part>.jsonl    the part's journal: one line per committed batch, `{relpath: {"sha256", ...} | null}`

A file is *finished* only when a journal of the folder lists it and its bytes still hash to the
listed value; a resume checks that once per file before skipping it, and redoes a file whose bytes
changed. A batch is committed by writing its files to temp names, appending (and fsyncing) its
journal line, then renaming the files into place: every output file that exists is therefore
listed, and a kill at any moment loses at most the batch in flight. Data blocks are not fsynced per
file (the cost that made anonymizing 3x slower than decoding and encoding): after a power loss the
hashes catch a damaged file, and `close(complete=True)` syncs the file system before the run says
it is complete.

Any other file under OUT is refused, naming it: a file at one of this run's output paths that no
journal lists (pass `overwrite=True` to replace it), or a file this run would never write (never
touched; the user must move it). A `shared` folder (a RUN_DIR that several commands write into, e.g.
eval.json beside attack.json) leaves the files it would never write alone instead of refusing them,
and never looks into a sub-folder that is a run folder of its own. Symbolic links are never followed
or written through.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Mapping

from ppvi_cli.errors import PPVIError

try:  # advisory locks; on a platform without fcntl, concurrent writers are not detected
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

BOOKKEEPING = ".ppvi"
RUN_FORMAT = "ppvi-run"
TEMP_PREFIX = ".ppvi-tmp-"  # staged files are `.ppvi-tmp-<random>-<name>` beside their target (suffix kept)
TEMP_SUFFIX = ".part"  # `atomic.atomic_open`'s temp files: `.<name>.<random>.part`
_HASH_CHUNK = 1 << 20


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical(value) -> str:
    """The JSON text an identity is compared by (sorted keys; tuples read back as lists)."""
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def check_outside_inputs(output: str | Path, inputs: Mapping[str, str | Path | None], *, option: str = "--out",
                         folder: bool = True) -> Path:
    """Refuse an output that lies inside (or is) any input, or, for a folder output, holds one.

    `inputs` maps the option that names an input (e.g. "--data") to its path (None entries are
    skipped). Paths are compared resolved, so links and `..` cannot sneak an output into an input.
    Returns the resolved output path. Every command that writes calls this before writing.
    """
    out = Path(output).expanduser().resolve()
    for name, path in inputs.items():
        if path is None:
            continue
        src = Path(path).expanduser().resolve()
        if out == src or out.is_relative_to(src):
            raise PPVIError(f"{option} {output} is inside {name} {path}: an output must never land on an input; "
                            "choose a path outside it")
        if folder and src.is_relative_to(out):
            raise PPVIError(f"{name} {path} is inside {option} {output}: choose an output folder that holds no input")
    return out


@dataclass
class Staged:
    """A file written under a temp name, waiting for `RunFolder.commit`."""

    relpath: str
    temp: Path
    sha256: str


class RunFolder:
    """An output folder owned by one run identity; use as a context manager.

    Args:
        root: the output folder (created if absent).
        identity: what must be equal for two runs to share the folder (JSON-ready dict).
        inputs: option -> path of every input, for `check_outside_inputs`.
        part: this writer's name among the run's concurrent writers (e.g. "shard-0-of-4").
        owns: predicate on a relative path: is it one of this run's outputs? Files under OUT that a
            journal does not list are refused; those `owns` accepts may be replaced with `overwrite`.
        overwrite: replace unlisted files at this run's output paths, and take over a folder whose
            record has another identity (only when no writer holds it).
        option: the output's option name, for messages.
        hints: identity key -> what to do when only that key differs (e.g. "rerun with its --batch-size").
        overwrite_flag: the command's flag for `overwrite`, named in messages (None: it has none).
        shared: other commands' files may sit beside this run's; only paths `owns` accepts are checked.
    """

    def __init__(self, root: str | Path, identity: dict, *, inputs: Mapping[str, str | Path | None] | None = None,
                 part: str = "main", owns: Callable[[str], bool] = lambda rel: True, overwrite: bool = False,
                 option: str = "--out", hints: Mapping[str, str] | None = None,
                 overwrite_flag: str | None = "--overwrite", shared: bool = False):
        self.hints, self.flag, self.shared = dict(hints or {}), overwrite_flag, shared
        self.option, self.overwrite, self.owns, self.part = option, overwrite, owns, part
        self.given = Path(root)
        self.root = check_outside_inputs(root, inputs or {}, option=option)
        self.identity = json.loads(canonical(identity))
        self.meta = self.root / BOOKKEEPING
        self.listed: dict[str, dict] = {}  # relpath -> journal entry, over every part
        self.verified: dict[str, bool] = {}
        self.repaired: list[str] = []
        self._lock_fd = self._part_fd = self._journal = None
        self._part_locked = False
        self._checked_dirs: set[Path] = set()

    # -- opening -------------------------------------------------------------------------------
    def __enter__(self) -> "RunFolder":
        if self._journal is not None:  # already open: `with` on a folder a helper opened only scopes its closing
            return self
        try:
            self.open()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def open(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise PPVIError(f"{self.option} {self.given} is a file; pass a folder")
        for parent in [self.root, *self.root.parents]:
            if parent.is_symlink():  # resolve() already followed it; refuse a link made since
                raise PPVIError(f"{self.option} {self.given} passes through a symbolic link; pass a real folder")
        self._precheck()
        self.meta.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.meta / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._part_fd = os.open(self.meta / f"{self.part}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self._part_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PPVIError(f"{self.option} {self.given} is being written now by {self._holders() or 'another ppvi'} "
                                f"({self.part}); wait for it to finish or choose another {self.option}") from None
            self._part_locked = True
        alone = self._lock(exclusive=True)
        self._claim(alone)
        os.ftruncate(self._part_fd, 0)
        os.pwrite(self._part_fd, json.dumps(_holder()).encode(), 0)
        files = self._scan(clean_temps=alone)  # listed before the journals are read: see `commit`
        self._read_journals()
        self._check_foreign(files)
        if alone:
            self._lock(exclusive=False)
        self._journal = open(self.meta / f"{self.part}.jsonl", "a", encoding="utf-8")

    def _precheck(self) -> None:
        """Refuse what `open` would refuse before creating anything, so a refused run changes nothing.

        (`open` checks again under the lock; this pass only spares the folder the bookkeeping files.)
        """
        if not self.meta.is_dir():  # a folder no run owns yet: every file in it is unlisted
            self._check_foreign(self._scan(clean_temps=False))
            return
        stored = _read_record(self.meta / "run.json")
        if not self.overwrite and stored is not None and canonical(stored["identity"]) != canonical(self.identity):
            self._refuse_other(stored)

    def _lock(self, exclusive: bool) -> bool:
        """Take the folder lock: exclusive when no other writer holds it (returns True), else shared."""
        if fcntl is None:
            return True
        if exclusive:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
        fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
        return False

    def _claim(self, alone: bool) -> None:
        """Create the identity record, or check the existing one is ours."""
        record = self.meta / "run.json"
        body = {"format": RUN_FORMAT, "identity": self.identity, "created_by": _holder()}
        if _create_once(record, json.dumps(body, indent=1, default=str) + "\n"):
            return
        stored = _read_record(record)
        if stored is None:
            if not (self.overwrite and alone):
                raise PPVIError(f"{self.option} {self.given}: its run record {record} is damaged; "
                                f"{self._fix('start the folder afresh')}")
        elif canonical(stored["identity"]) == canonical(self.identity):
            return
        elif not (self.overwrite and alone):
            self._refuse_other(stored)
        for path in self.meta.glob("*.jsonl"):  # --overwrite: the old run's record goes, its files are unlisted
            path.unlink()
        record.unlink()
        _create_once(record, json.dumps(body, indent=1, default=str) + "\n")

    def _refuse_other(self, stored: dict) -> None:
        """The error for a folder whose record names another identity: what differs, who made it."""
        who = (stored.get("created_by") or {}).get("command") or "another run"
        holders = self._holders()
        state = f"; being written now by {holders}" if holders else ""
        fix = "" if not self.flag else f" ({self.flag} needs it idle)" if holders else \
            f", or pass {self.flag} to replace its files"
        keys = _differing(stored["identity"], self.identity)
        hint = "".join(f"; {self.hints[k]}" for k in keys if k in self.hints)
        what = "; ".join(f"{k} {stored['identity'].get(k)!r} there, {self.identity.get(k)!r} here" for k in keys[:3])
        raise PPVIError(f"{self.option} {self.given} belongs to another run ({what or 'other settings'}; made by "
                        f"`{who}`{state}): choose another {self.option}{fix}{hint}")

    def _holders(self) -> str:
        """The live writers of this folder other than this one, for messages."""
        names = []
        for path in sorted(self.meta.glob("*.lock")):
            if path.name == "lock" or (path.name == f"{self.part}.lock" and self._part_locked):
                continue
            try:
                info = json.loads(path.read_text(encoding="utf-8") or "{}")
            except (OSError, ValueError):
                continue
            if info and _held(path):
                names.append(f"pid {info.get('pid')} on {info.get('host')} (`{info.get('command')}`)")
        return ", ".join(names)

    def _scan(self, clean_temps: bool) -> list[str]:
        """Relative paths of the files under the root (bookkeeping and temp files aside)."""
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            base = Path(dirpath)
            if base == self.root and BOOKKEEPING in dirnames:
                dirnames.remove(BOOKKEEPING)
            if self.shared:  # another run's folder inside a shared one, where this run writes nothing, is its business
                dirnames[:] = [d for d in dirnames if not (base / d / BOOKKEEPING).is_dir()
                               or self.owns((base / d).relative_to(self.root).as_posix() + "/")]
            for name in dirnames:
                if (base / name).is_symlink():
                    raise PPVIError(f"{self.option} {self.given}: {(base / name).relative_to(self.root)} is a symbolic "
                                    "link; ppvi writes only into real folders (remove the link)")
            for name in filenames:
                ours = name.startswith(TEMP_PREFIX)
                if ours or (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
                    if clean_temps and (ours or not self.shared):  # a killed run's half-written file; no other
                        # writer of this folder is alive (in a shared one, other commands' temp files are theirs)
                        (base / name).unlink(missing_ok=True)
                    continue
                found.append((base / name).relative_to(self.root).as_posix())
        return found

    def _read_journals(self) -> None:
        for path in sorted(self.meta.glob("*.jsonl")):
            lines = path.read_text(encoding="utf-8").split("\n")
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    batch = json.loads(line)
                except ValueError:
                    if number == len(lines):  # the last line of a killed append: that batch never renamed
                        break
                    raise PPVIError(f"{self.option} {self.given}: journal {path} is damaged at line {number}; "
                                    f"{self._fix('start the folder afresh')}") from None
                for rel, entry in batch.items():
                    if entry is None:
                        self.listed.pop(rel, None)
                    else:
                        self.listed[rel] = entry

    def _check_foreign(self, files: list[str]) -> None:
        unlisted = [rel for rel in files if rel not in self.listed]
        foreign = [rel for rel in unlisted if not self.owns(rel)]
        if self.shared:  # other commands' files: left alone
            unlisted = [rel for rel in unlisted if self.owns(rel)]
        elif foreign:
            raise PPVIError(f"{self.option} {self.given} holds {len(foreign)} file(s) this run does not write "
                            f"({_some(foreign)}): they are not covered by its record; move them away or choose "
                            f"an empty {self.option}")
        if unlisted and not self.overwrite:
            raise PPVIError(f"{self.option} {self.given} holds {len(unlisted)} file(s) no record of this run covers "
                            f"({_some(unlisted)}): they were not written by this run with these settings, so they "
                            f"are not trusted; {self._fix('replace them')}")

    def _fix(self, what: str) -> str:
        return (f"pass {self.flag} to {what}, or choose an empty {self.option}" if self.flag
                else f"choose an empty {self.option}")

    # -- files ---------------------------------------------------------------------------------
    def path(self, relpath: str) -> Path:
        return self.root / relpath

    def finished(self, relpath: str) -> bool:
        """Listed by a journal and still holding the listed bytes (hashed once per run)."""
        if relpath not in self.verified:
            entry, path = self.listed.get(relpath), self.root / relpath
            ok = entry is not None and path.is_file() and not path.is_symlink() and sha256_of(path) == entry["sha256"]
            if entry is not None and not ok and path.exists():
                self.repaired.append(relpath)
            self.verified[relpath] = ok
        return self.verified[relpath]

    def entry(self, relpath: str) -> dict | None:
        return self.listed.get(relpath)

    def stage(self, relpath: str, write: Callable[[BinaryIO], None]) -> Staged:
        """Write a file under a temp name beside its target (not visible until `commit`).

        `write` fills an in-memory buffer, so the hash comes from the bytes themselves (no read-back).
        """
        buffer = io.BytesIO()
        write(buffer)
        data = buffer.getbuffer()
        temp = self._temp_for(relpath)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for `open`
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            return Staged(relpath, temp, hashlib.sha256(data).hexdigest())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def stage_path(self, relpath: str, make: Callable[[Path], object]) -> Staged:
        """Let `make(temp_path)` create the file (for writers that want a path, e.g. matplotlib)."""
        temp = self._temp_for(relpath)
        try:
            make(temp)
            os.chmod(temp, 0o666 & ~_umask())  # writers that use mkstemp leave 0600
            return Staged(relpath, temp, sha256_of(temp))
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _temp_for(self, relpath: str) -> Path:
        """A fresh temp name beside `relpath`'s target, its folder made and checked to be inside the root."""
        target = self.root / relpath
        parent = target.parent
        if parent not in self._checked_dirs:
            parent.mkdir(parents=True, exist_ok=True)
            if not parent.resolve().is_relative_to(self.root):
                raise PPVIError(f"{self.option} {self.given}: {relpath} would be written outside the folder")
            self._checked_dirs.add(parent)
        return target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:8]}-{target.name}")

    def commit(self, staged: Iterable[Staged], extra: Mapping[str, dict] | None = None,
               removed: Iterable[str] = ()) -> None:
        """List the staged files (with `extra[relpath]` beside their hash) durably, then rename them in."""
        staged = list(staged)
        batch = {s.relpath: {"sha256": s.sha256, **((extra or {}).get(s.relpath) or {})} for s in staged}
        batch.update({rel: None for rel in removed})
        try:
            self._journal.write(json.dumps(batch, separators=(",", ":"), default=str) + "\n")
            self._journal.flush()
            os.fsync(self._journal.fileno())
        except BaseException:
            for s in staged:
                s.temp.unlink(missing_ok=True)
            raise
        for s in staged:
            os.replace(s.temp, self.root / s.relpath)
            self.listed[s.relpath] = batch[s.relpath]
            self.verified[s.relpath] = True
        for rel in removed:
            (self.root / rel).unlink(missing_ok=True)
            self.listed.pop(rel, None)
            self.verified.pop(rel, None)

    def write(self, relpath: str, write: Callable[[BinaryIO], None], extra: dict | None = None) -> None:
        self.commit([self.stage(relpath, write)], {relpath: extra} if extra else None)

    def produce(self, relpath: str, make: Callable[[Path], object]) -> Path:
        """`stage_path` and commit in one step; returns the final path."""
        self.commit([self.stage_path(relpath, make)])
        return self.root / relpath

    def write_text(self, relpath: str, text: str) -> None:
        self.write(relpath, lambda fh: fh.write(text.encode("utf-8")))

    def sync(self) -> None:
        """Make every file written so far durable (one file-system sync, not one fsync per file)."""
        _syncfs(self.root)

    def _release(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        for attr in ("_part_fd", "_lock_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                if attr == "_part_fd" and self._part_locked:
                    os.ftruncate(fd, 0)
                os.close(fd)  # closing drops the flock
                setattr(self, attr, None)
        self._part_locked = False


def stored_identity(root: str | Path) -> dict | None:
    """The identity recorded in a run folder, or None when it holds no readable record."""
    stored = _read_record(Path(root) / BOOKKEEPING / "run.json")
    return None if stored is None else stored["identity"]


def _read_record(path: Path) -> dict | None:
    """The identity record at `path`, or None when it is absent, unreadable or not a ppvi run record."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("format") != RUN_FORMAT or not isinstance(stored.get("identity"), dict):
        return None
    return stored


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""}


def _held(path: Path) -> bool:
    """Whether another process holds an exclusive flock on `path`."""
    if fcntl is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _create_once(path: Path, text: str) -> bool:
    """Write `path` atomically if it does not exist yet; False when it did (another writer won)."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
    temp.write_text(text, encoding="utf-8")
    try:
        with open(temp, "rb") as fh:
            os.fsync(fh.fileno())
        os.link(temp, path)
        return True
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)


def _differing(stored: dict, ours: dict) -> list[str]:
    """The keys on which two identities differ, sorted."""
    return sorted(k for k in set(stored) | set(ours) if canonical(stored.get(k)) != canonical(ours.get(k)))


def _some(paths: list[str], n: int = 3) -> str:
    return ", ".join(paths[:n]) + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _syncfs(path: Path) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()
