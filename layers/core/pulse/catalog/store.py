"""Catalogue versions in S3, and the live catalogue a container serves (checked, swapped atomically).

Layout under the prefix (default `catalog/`):
  versions/<version>/embeddings.npy   float32 (n, dim), L2-normalised rows
  versions/<version>/codes.npy        uint8 (n, dim) and scales.npy float32 (n,): the rows quantized for the
                                      API's int8 scan (pulse.serving.int8_scan); versions published before them
                                      are quantized when loaded
  versions/<version>/items.json       {"item_ids", "titles", "categories", "available", "popularity", "trending"}
  versions/<version>/manifest.json    version, count, dim, encoder fingerprint, sha256 of both files
  CURRENT                             {"version": ...}: written last, so readers never see half a version
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError
from numpy.typing import NDArray

from pulse import aws
from pulse.catalog.int8 import quantize_rows
from pulse.catalog.version import CatalogVersion
from pulse.errors import PulseError
from pulse.interest.model import MAX_POPULARITY_WEIGHT

log = logging.getLogger(__name__)


class CatalogRefusedError(PulseError, ValueError):
    """A version that must not be served (missing files, shapes that disagree, another encoder)."""


class CatalogUnavailableError(PulseError, RuntimeError):
    """No catalogue can be served. `retryable`: one exists but cannot be loaded right now (store unreachable, or
    the current version refused with none loaded before it), so work that needs it must be retried; otherwise
    none has been published yet. The message is safe to show any caller: the details go to the log."""

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class CatalogStoreError(PulseError, RuntimeError):
    """S3 failed while reading the catalogue (a passing failure: retried later, never a refusal)."""


class S3CatalogRepository:
    def __init__(self, bucket: str, prefix: str = "catalog/"):
        self.bucket = bucket
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"

    def current_version(self) -> str | None:
        raw = self._get(f"{self.prefix}CURRENT")
        if raw is None:
            return None
        try:
            return str(json.loads(raw)["version"])
        except (ValueError, KeyError, TypeError):
            raise CatalogRefusedError("the CURRENT pointer is not {\"version\": ...}") from None

    def load(self, version: str, expected_fingerprint: str | None, rows_dir: str | None = None) -> CatalogVersion:
        """The version, checked whole; any problem (missing or damaged file, shapes, values, another encoder)
        is a CatalogRefusedError naming it. Errors reaching S3 are a CatalogStoreError (the caller retries later).
        `rows_dir` (the API): the float32 rows go straight from S3 to an unlinked file there and are memory-mapped,
        and the published int8 codes come along (`CatalogVersion.quantized`)."""
        try:
            return self._load(version, expected_fingerprint, rows_dir)
        except (CatalogRefusedError, CatalogStoreError):
            raise
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, OSError, EOFError) as error:
            raise CatalogRefusedError(f"version {version}: cannot be read ({type(error).__name__}: {error})") from None

    def _load(self, version: str, expected_fingerprint: str | None, rows_dir: str | None) -> CatalogVersion:
        base = f"{self.prefix}versions/{version}/"
        manifest_raw = self._get(base + "manifest.json")
        if manifest_raw is None:
            raise CatalogRefusedError(f"version {version}: manifest.json is missing")
        try:
            manifest = json.loads(manifest_raw)
        except ValueError as error:
            raise CatalogRefusedError(f"version {version}: manifest.json does not parse ({error})") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), dict):
            raise CatalogRefusedError(f"version {version}: manifest.json has no sha256 table")
        if expected_fingerprint is not None and manifest.get("encoder_fingerprint") != expected_fingerprint:
            raise CatalogRefusedError(f"version {version} was embedded by encoder {manifest.get('encoder_fingerprint')}"
                                 f", this deployment runs {expected_fingerprint}")
        manifest = {**manifest, "version": version}  # refusals name the version loaded, whatever the file says
        shape = (manifest["count"], manifest["dim"])
        columns = json.loads(self._checked(base, manifest, "items.json"))
        mapped = self._mapped_rows(base, manifest, rows_dir) if rows_dir is not None else None
        embeddings = mapped if mapped is not None else self._array(base, manifest, "embeddings.npy")
        if embeddings.dtype != np.float32 or embeddings.shape != shape:
            raise CatalogRefusedError(f"version {version}: embeddings are {embeddings.dtype}{embeddings.shape}, the "
                                 f"manifest says float32({manifest['count']}, {manifest['dim']})")
        quantized = None
        if rows_dir is not None and "codes.npy" in manifest["sha256"]:
            codes, scales = self._array(base, manifest, "codes.npy"), self._array(base, manifest, "scales.npy")
            if codes.dtype != np.uint8 or codes.shape != shape or scales.dtype != np.float32 \
                    or scales.shape != shape[:1] or not (np.isfinite(scales).all() and (scales > 0).all()):
                raise CatalogRefusedError(f"version {version}: codes {codes.dtype}{codes.shape} and scales "
                                          f"{scales.dtype}{scales.shape} do not fit float32{shape} rows")
            quantized = (codes, scales)
        if len(set(columns["item_ids"])) != len(columns["item_ids"]):
            raise CatalogRefusedError(f"version {version}: item ids repeat")
        space = manifest.get("space") or {}
        text_to_collab = None
        if space.get("kind") == "hybrid":
            body = self._get(base + "text_to_collab.npy")
            if body is None or hashlib.sha256(body).hexdigest() != manifest["sha256"].get("text_to_collab.npy"):
                raise CatalogRefusedError(f"version {version}: text_to_collab.npy is missing or does not match")
            text_to_collab = np.load(io.BytesIO(body), allow_pickle=False)
            if text_to_collab.shape[1] + space["text_dim"] != manifest["dim"]:
                raise CatalogRefusedError(f"version {version}: text_to_collab is {text_to_collab.shape}, dim is "
                                     f"{manifest['dim']}")
        learned = manifest.get("settings")
        if learned is not None:
            _check_learned(version, learned)
        loaded = CatalogVersion(
            version=version, item_ids=columns["item_ids"], embeddings=np.ascontiguousarray(embeddings),
            encoder_fingerprint=manifest["encoder_fingerprint"], titles=columns["titles"],
            categories=columns["categories"], available=np.array(columns["available"], dtype=bool),
            popularity=np.array(columns["popularity"], dtype=np.float64),
            trending=np.array(columns.get("trending") or [], dtype=np.float64),
            created_at=float(manifest.get("created_at", 0)), text_to_collab=text_to_collab,
            text_weight=float(space.get("text_weight", 1.0)), collab_weight=float(space.get("collab_weight", 0.0)),
            settings=learned, basis=manifest.get("basis") or f"text-{manifest['encoder_fingerprint'][:12]}",
            trained_until=manifest.get("trained_until"))
        if quantized is not None:  # after the version's own checks: a NaN row is refused as non-finite
            _check_codes_sample(version, loaded.embeddings, *quantized)
        object.__setattr__(loaded, "quantized", quantized)  # not an init field: replace() never carries it over
        return loaded

    def _checked(self, base: str, manifest: dict[str, Any], name: str) -> bytes:
        body = self._get(base + name)
        if body is None:
            raise CatalogRefusedError(f"version {manifest['version']}: {name} is missing")
        if hashlib.sha256(body).hexdigest() != manifest["sha256"].get(name):
            raise CatalogRefusedError(f"version {manifest['version']}: {name} does not match its sha256 in the "
                                      "manifest")
        return body

    def _array(self, base: str, manifest: dict[str, Any], name: str) -> NDArray[Any]:
        array: NDArray[Any] = np.load(io.BytesIO(self._checked(base, manifest, name)), allow_pickle=False)
        return np.ascontiguousarray(array)

    def _mapped_rows(self, base: str, manifest: dict[str, Any], rows_dir: str) -> NDArray[Any] | None:
        """embeddings.npy streamed from S3 into an unlinked file in rows_dir (hashed on the way) and mapped
        read-only; None when the disk has no room for it (then it is read into memory)."""
        needed = manifest["count"] * manifest["dim"] * 4
        try:
            if shutil.disk_usage(rows_dir).free < needed + (64 << 20):
                log.warning("reading the rows into memory: %s has no room for %d MB", rows_dir, needed >> 20)
                return None
            with tempfile.NamedTemporaryFile(dir=rows_dir, prefix="pulse-rows-", suffix=".npy") as file:
                digest = self._stream(base + "embeddings.npy", file)
                if digest is None:
                    raise CatalogRefusedError(f"version {manifest['version']}: embeddings.npy is missing")
                if digest != manifest["sha256"].get("embeddings.npy"):
                    raise CatalogRefusedError(f"version {manifest['version']}: embeddings.npy does not match its "
                                              "sha256 in the manifest")
                rows: NDArray[Any] = np.asarray(np.load(file.name, mmap_mode="r", allow_pickle=False))
        except OSError as error:  # the local disk, not the version: read the rows into memory instead
            log.warning("reading the rows into memory: mapping them from %s failed: %s", rows_dir, error)
            return None
        return rows

    def load_training_state(self, version: str) -> dict[str, NDArray[Any]] | None:
        """A hybrid version's text block, collaborative block and warm rows (what the next training aligns to)."""
        body = self._get(f"{self.prefix}versions/{version}/training.npz")
        if body is None:
            return None
        with np.load(io.BytesIO(body), allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}

    def publish(self, catalog: CatalogVersion, training_state: dict[str, NDArray[Any]] | None = None,
                space: dict[str, Any] | None = None) -> bool:
        """Write the version (unless it is already complete) and point CURRENT at it. True if new files."""
        base = f"{self.prefix}versions/{catalog.version}/"
        written = False
        if self._get(base + "manifest.json") is None:
            codes, scales = quantize_rows(catalog.embeddings)
            files = {
                "embeddings.npy": _npy(catalog.embeddings),
                "codes.npy": _npy(codes, np.uint8),
                "scales.npy": _npy(scales),
                "items.json": json.dumps({
                    "item_ids": catalog.item_ids, "titles": catalog.titles, "categories": catalog.categories,
                    "available": catalog.available.tolist(), "popularity": catalog.popularity.tolist(),
                    **({"trending": np.round(catalog.trending, 6).tolist()} if catalog.trending.any() else {}),
                }, ensure_ascii=False).encode("utf-8"),
            }
            if catalog.text_to_collab is not None:
                files["text_to_collab.npy"] = _npy(catalog.text_to_collab)
            if training_state is not None:
                buffer = io.BytesIO()
                np.savez(buffer, allow_pickle=False, **training_state)
                files["training.npz"] = buffer.getvalue()
            for name, body in files.items():
                self._put(base + name, body)
            manifest = {"version": catalog.version, "count": len(catalog), "dim": catalog.dim,
                        "encoder_fingerprint": catalog.encoder_fingerprint, "created_at": catalog.created_at,
                        "basis": catalog.basis, "settings": catalog.settings, "trained_until": catalog.trained_until,
                        "sha256": {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}}
            if catalog.text_to_collab is not None:  # catalog.is_hybrid
                manifest["space"] = {"kind": "hybrid", "text_weight": catalog.text_weight,
                                     "collab_weight": catalog.collab_weight,
                                     "text_dim": catalog.dim - catalog.text_to_collab.shape[1],
                                     "collab_dim": int(catalog.text_to_collab.shape[1]), **(space or {})}
            self._put(base + "manifest.json", json.dumps(manifest, indent=1).encode())
            written = True
        self._put(f"{self.prefix}CURRENT", json.dumps({"version": catalog.version,
                                                      "published_at": time.time()}).encode())
        return written

    def _get(self, key: str) -> bytes | None:
        s3 = aws.s3_for_checked_reads()
        try:
            body: bytes = s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return body
        except s3.exceptions.NoSuchKey:
            return None
        except ClientError as error:
            # Listing is granted under the catalogue prefix only, so S3 may answer a missing key with AccessDenied
            # rather than NoSuchKey: a listing of that prefix tells which.
            if error.response.get("Error", {}).get("Code") in ("AccessDenied", "403") and not self._exists(key):
                return None
            raise CatalogStoreError(f"reading s3://{self.bucket}/{key} failed: {error}") from error
        except BotoCoreError as error:
            raise CatalogStoreError(f"reading s3://{self.bucket}/{key} failed: {error}") from error

    def _stream(self, key: str, sink: IO[bytes]) -> str | None:
        """The object written to `sink` a megabyte at a time, and its sha256; None if there is no such object."""
        s3 = aws.s3_for_checked_reads()
        digest = hashlib.sha256()
        try:
            body = s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                for chunk in body.iter_chunks(1 << 20):
                    digest.update(chunk)
                    sink.write(chunk)
            finally:
                body.close()  # the connection goes back to the pool, whatever happened
        except s3.exceptions.NoSuchKey:
            return None
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("AccessDenied", "403") and not self._exists(key):
                return None  # as in _get: a missing key answered with AccessDenied
            raise CatalogStoreError(f"reading s3://{self.bucket}/{key} failed: {error}") from error
        except BotoCoreError as error:
            raise CatalogStoreError(f"reading s3://{self.bucket}/{key} failed: {error}") from error
        sink.flush()
        return digest.hexdigest()

    def _exists(self, key: str) -> bool:
        try:
            listed = aws.client("s3").list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except (BotoCoreError, ClientError) as error:
            raise CatalogStoreError(f"listing s3://{self.bucket}/{key} failed: {error}") from error
        return any(entry["Key"] == key for entry in listed.get("Contents", []))

    def _put(self, key: str, body: bytes) -> None:
        aws.client("s3").put_object(Bucket=self.bucket, Key=key, Body=body)


def _check_learned(version: str, learned: Any) -> None:
    """Learned interest settings must be what pulse.settings can serve: positive half-lives, finite blend."""
    try:
        lives, blend = learned["half_lives"], learned["blend_weights"]
        ok = (all(float(value) > 0 and np.isfinite(float(value)) for value in lives.values())
              and all(np.isfinite(float(value)) for value in blend.values()) and set(lives) == set(blend)
              and learned.get("rating_weighting") in ("stars", "flat")
              and 0 <= float(learned.get("popularity_weight", 0.0)) <= MAX_POPULARITY_WEIGHT)
    except (KeyError, TypeError, AttributeError, ValueError):
        ok = False
    if not ok:
        raise CatalogRefusedError(f"version {version}: its learned settings are malformed: {learned!r:.200}")


CODES_SAMPLE_ROWS = 256


def _check_codes_sample(version: str, rows: NDArray[Any], codes: NDArray[Any], scales: NDArray[Any]) -> None:
    """Codes that are not the rows' (another publisher's bug, a partial rewrite) would scan for the wrong
    shortlist without a sound: a sample of rows, spread over the version, is quantized again and must match."""
    sample = np.unique(np.linspace(0, len(rows) - 1, min(len(rows), CODES_SAMPLE_ROWS)).astype(np.int64))
    expected_codes, expected_scales = quantize_rows(rows[sample])
    differs = np.flatnonzero((expected_codes != codes[sample]).any(axis=1) | (expected_scales != scales[sample]))
    if len(differs):
        raise CatalogRefusedError(f"version {version}: codes.npy does not match the rows (row {sample[differs[0]]} "
                                  f"and {len(differs) - 1} more of {len(sample)} checked)")


def _npy(matrix: NDArray[Any], dtype: type[np.generic] = np.float32) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(matrix, dtype=dtype), allow_pickle=False)
    return buffer.getvalue()


EMPTY_CHECK_SECONDS = 1.0


def settle_heap(replaced: bool = True) -> None:
    """Move what the container holds now (a served version's ids, index and titles: a few objects per item) out
    of the cyclic collector's view. Without it the collector walks them again and again as requests allocate:
    pauses of 15-65 ms at 100k items, the API's p99. When a version was `replaced`, unfrozen and collected first,
    so its cycles are freed (refcounting frees the rest as before); the first version is frozen at once (a full
    collection then costs ~65 ms of cold start and has no version to free)."""
    if replaced:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


class LiveCatalog:
    """The version a container serves: loaded once, re-checked against CURRENT at most every
    `check_interval` seconds, swapped atomically. A bad new version is refused (and never downloaded again by
    this container); an S3 error while loading one is retried later with a doubling backoff. Either way the old
    version keeps serving."""

    def __init__(self, repository: Any, expected_fingerprint: str | None, check_interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_refused: Callable[[str], None] | None = None,
                 retry_after: float = 5.0, max_retry_after: float = 300.0):
        self.repository = repository
        self.expected_fingerprint = expected_fingerprint
        self.check_interval = check_interval
        self.clock = clock
        self.on_refused = on_refused or (lambda reason: None)
        self.retry_after, self.max_retry_after = retry_after, max_retry_after
        self._serving: CatalogVersion | None = None
        self._refused: set[str] = set()
        self.last_refusal: dict[str, str] | None = None  # {"version", "reason"}: what /health reports
        self._deferred: dict[str, tuple[float, float]] = {}  # version -> (next attempt at, backoff)
        self._unreachable = False  # the last check could not reach the store
        self._checked_at: float | None = None
        self._lock = threading.Lock()
        self._prepare: Callable[[CatalogVersion], CatalogVersion] | None = None
        self._rows_dir: str | None = None

    def prepare_with(self, prepare: Callable[[CatalogVersion], CatalogVersion], rows_dir: str | None = None) -> None:
        """Turn every version into its serving form before it serves (the API: the int8 scan), the one already
        serving included; `rows_dir`: where the repository maps the float32 rows from (see its `load`)."""
        with self._lock:
            self._prepare, self._rows_dir = prepare, rows_dir
            if self._serving is not None:
                self._serving = self._prepared(self._serving)

    def current(self) -> CatalogVersion:
        """The version to serve; raises CatalogUnavailableError when there is none."""
        if self._due(self.clock()):
            with self._lock:
                now = self.clock()
                if self._due(now):
                    self._refresh(now)
                    self._checked_at = now
        if self._serving is None:
            if self._unreachable or self._deferred:
                raise CatalogUnavailableError("the catalogue store cannot be reached; retrying", retryable=True)
            if self.last_refusal is not None:
                raise CatalogUnavailableError(f"catalogue version {self.last_refusal['version']} was refused and no "
                                         "earlier version is loaded (GET /health says why)", retryable=True)
            raise CatalogUnavailableError("no catalogue has been published yet (pulse catalog build FILE.jsonl)")
        return self._serving

    @property
    def deferred(self) -> dict[str, Any] | None:
        """The version whose loading failed on an S3 error and when it is tried again (what /health reports)."""
        if not self._deferred:
            return None
        version, (at, _) = max(self._deferred.items(), key=lambda entry: entry[1][0])
        return {"version": version, "retry_in_seconds": round(max(0.0, at - self.clock()), 3)}

    def _due(self, now: float) -> bool:
        """Check CURRENT once per interval; while nothing is served, at most once a second (the first version
        shows up about as soon as it is published, and a flood of requests is not a flood of S3 reads)."""
        interval = min(self.check_interval, EMPTY_CHECK_SECONDS) if self._serving is None else self.check_interval
        return self._checked_at is None or now - self._checked_at >= interval

    def _refresh(self, now: float) -> None:
        try:
            version = self.repository.current_version()
        except CatalogRefusedError as error:
            self._refuse("CURRENT", str(error))
            return
        except Exception as error:  # noqa: BLE001 - store unreachable: keep serving what we have
            self._unreachable = True
            log.warning("catalogue check failed; still serving %s: %s",
                        self._serving.version if self._serving else "nothing", error)
            return
        self._unreachable = False
        if version is None or (self._serving is not None and version == self._serving.version) \
                or version in self._refused:
            return
        attempt_at, backoff = self._deferred.get(version, (now, 0.0))
        if now < attempt_at:
            return
        try:
            loaded = self.repository.load(version, self.expected_fingerprint,
                                          **({"rows_dir": self._rows_dir} if self._rows_dir else {}))
        except CatalogRefusedError as error:
            self._deferred.pop(version, None)
            self._refuse(version, str(error))
            return
        except Exception as error:  # noqa: BLE001 - S3 failed mid-way: not the version's fault, try again later
            backoff = min(self.max_retry_after, backoff * 2 if backoff else max(self.retry_after, self.check_interval))
            self._deferred[version] = (now + backoff, backoff)
            log.warning("loading catalogue version %s failed; retrying in %.0f s: %s", version, backoff, error)
            return
        self._deferred.clear()
        loaded = self._prepared(loaded)
        replaced = self._serving is not None
        self._serving = loaded  # one reference assignment: readers see the old or the new version, whole
        settle_heap(replaced)
        log.info("serving catalogue %s (%d items)", loaded.version, len(loaded))

    def _prepared(self, version: CatalogVersion) -> CatalogVersion:
        if self._prepare is None:
            return version
        try:
            return self._prepare(version)
        except Exception:  # noqa: BLE001 - the plain version still serves (float32 scores, rows in memory)
            log.exception("preparing catalogue %s for serving failed; serving it unprepared", version.version)
            return version

    def _refuse(self, version: str, reason: str) -> None:
        self._refused.add(version)
        self.last_refusal = {"version": version, "reason": reason}
        log.error("catalogue version refused: %s", reason)
        self.on_refused(reason)

    def embeddings_for(self, item_ids: Iterable[str]) -> dict[str, NDArray[Any]]:
        """CatalogReader for the ingest function: no catalogue yet -> every item is unknown."""
        catalog = self._current_for_ingest()
        return catalog.embeddings_for(item_ids) if catalog is not None else {}

    def embed_texts(self, text_vectors: NDArray[Any]) -> NDArray[Any]:
        catalog = self._current_for_ingest()
        return catalog.embed_texts(text_vectors) if catalog is not None else text_vectors

    def text_vectors_for(self, item_ids: Iterable[str]) -> dict[str, NDArray[Any]]:
        catalog = self._current_for_ingest()
        return catalog.text_vectors_for(item_ids) if catalog is not None else {}

    def learned_settings(self) -> dict[str, Any] | None:
        catalog = self._current_for_ingest()
        return catalog.learned_settings() if catalog is not None else None

    def _current_for_ingest(self) -> CatalogVersion | None:
        try:
            return self.current()
        except CatalogUnavailableError as error:
            if error.retryable:
                raise  # a catalogue exists but cannot be used now: the records are retried
            return None
