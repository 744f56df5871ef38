"""What every data script shares: one-line errors, checksums, resumable downloads, safe tar extraction.

Run a script's `main` through `run_main` so bad input ends as `error: ...` on stderr with exit code 2 and
never as a traceback (set MINIDEIT_DEBUG=1 to see the traceback of an unexpected failure).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sys
import tarfile
import traceback
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

CHUNK = 1 << 20  # 1 MiB reads keep memory flat for multi-gigabyte archives


class ScriptError(Exception):
    """Bad input or a failed check; the message is one line telling the user what to do."""


def run_main(main: Callable[[list[str] | None], int]) -> None:
    """Call main() and turn every failure into one `error:` line and a non-zero exit code."""
    try:
        code = main(None)
    except ScriptError as e:
        print(f'error: {e}', file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print('error: interrupted; run the same command again to resume', file=sys.stderr)
        code = 130
    except Exception as e:  # an unforeseen failure (disk full, a bug): still one line for the user
        if os.environ.get('MINIDEIT_DEBUG'):
            traceback.print_exc()
        print(f'error: {type(e).__name__}: {e} (set MINIDEIT_DEBUG=1 to see where)', file=sys.stderr)
        code = 1
    sys.exit(code)


def require_file(path: str | Path, what: str, hint: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ScriptError(f'{what} not found at {path}; {hint}')
    return path


def md5sum(path: Path, desc: str | None = None) -> str:
    """MD5 of a file, read in chunks with a progress bar (the official archives publish MD5s)."""
    digest = hashlib.md5()
    with open(path, 'rb') as f, tqdm(total=path.stat().st_size, unit='B', unit_scale=True,
                                     desc=desc or f'md5 {path.name}', leave=False) as bar:
        for chunk in iter(lambda: f.read(CHUNK), b''):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def check_md5(path: Path, expected: str, downloaded: bool = False) -> None:
    """Raise unless the file's MD5 matches; a bad download is deleted so that a rerun fetches it afresh."""
    actual = md5sum(path)
    if actual == expected.lower():
        return
    if downloaded:
        path.unlink()
        raise ScriptError(f'md5 of the downloaded {path.name} is {actual}, expected {expected}; '
                          f'deleted it, run the command again to download it afresh')
    raise ScriptError(f'md5 of {path} is {actual}, expected {expected}: the file is corrupt or not the '
                      f'official one; download it again (or pass the right checksum if it is a repacked copy)')


def download(url: str, dest: Path, by_hand: str = 'download it by hand and use --from-file') -> Path:
    """Download url to dest, resuming a previous partial download kept in dest + '.part'.

    Resuming asks the server for the missing tail with an HTTP Range header; a server that ignores it
    answers 200 with the whole file, and we start over. The .part file is renamed only when complete.
    """
    if dest.is_file():
        return dest
    part = dest.with_name(dest.name + '.part')
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={'Range': f'bytes={have}-'} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the .part file already holds everything
            part.rename(dest)
            return dest
        raise ScriptError(f'could not download {url}: HTTP {e.code}; {by_hand}') from None
    except (urllib.error.URLError, OSError) as e:
        raise ScriptError(f'could not download {url}: {getattr(e, "reason", e)}; check the network or '
                          f'{by_hand}') from None
    with response:
        resumed = response.status == 206
        total = int(response.headers.get('Content-Length', 0)) + (have if resumed else 0)
        with open(part, 'ab' if resumed else 'wb') as f, tqdm(total=total or None, initial=have if resumed else 0,
                                                            unit='B', unit_scale=True, desc=dest.name) as bar:
            try:
                for chunk in iter(lambda: response.read(CHUNK), b''):
                    f.write(chunk)
                    bar.update(len(chunk))
            except OSError as e:
                raise ScriptError(f'download of {url} stopped ({e}); run the same command again to resume')
    part.rename(dest)
    return dest


def safe_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Regular files and directories of an archive whose paths stay inside the target folder."""
    for member in tar:
        parts = Path(member.name).parts
        if member.name.startswith('/') or '..' in parts:
            raise ScriptError(f'{tar.name}: member {member.name!r} points outside the archive; refusing it')
        if member.isfile() or member.isdir():
            yield member


def extract_tar(archive: Path, dest: Path, desc: str) -> None:
    """Extract archive into dest (files and folders only, no links or devices), with a progress bar."""
    try:
        with tarfile.open(archive) as tar:
            for member in tqdm(safe_members(tar), desc=desc, unit=' files', leave=False):
                target = dest / member.name
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, 'wb') as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ScriptError(f'cannot extract {archive}: {e}; the archive is damaged or not a tar file') from None


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp folder into place; a crash before this line leaves only the temp folder."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
