"""A small reader (and writer) for MATLAB level-5 .mat files, so the data scripts need no scipy.

Two official files we need are MATLAB v5 files: the ImageNet devkit's ``data/meta.mat`` (a struct array
``synsets`` whose fields include ``ILSVRC2012_ID``, ``WNID`` and ``num_children``) and Oxford Flowers-102's
``imagelabels.mat`` / ``setid.mat`` (numeric row vectors). The format is documented by MathWorks
("MAT-File Format", level 5): a 128-byte header, then a sequence of *data elements*. Each element is an
8-byte tag (data type, byte count) followed by its bytes, padded to a multiple of 8. Two details matter:

* a *small* element packs its tag into 4 bytes (byte count in the upper 16 bits) with up to 4 data bytes;
* a top-level element may be ``miCOMPRESSED``: a zlib stream that inflates to an ordinary element.

An array is an ``miMATRIX`` element holding sub-elements: array flags (the class), dimensions, name, then
the payload (numbers, characters, cell elements or struct fields). Data are stored column-major.

We read the subset those files use: numeric and logical arrays, char arrays, cells and structs. Returned
values: numeric arrays as numpy arrays with MATLAB's shape, char arrays as ``str``, cells as lists and
struct arrays as lists of dicts (in MATLAB's linear order). The writer produces the same subset, so tests
can build small look-alike files; the tests also check both directions against scipy where it is installed.
"""
from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# Data types of element tags (MAT-file format, table "MAT-File Data Types").
MI_INT8, MI_UINT8, MI_INT16, MI_UINT16, MI_INT32, MI_UINT32 = 1, 2, 3, 4, 5, 6
MI_SINGLE, MI_DOUBLE, MI_INT64, MI_UINT64 = 7, 9, 12, 13
MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16, MI_UTF32 = 14, 15, 16, 17, 18
NUMPY_OF_MI = {MI_INT8: 'i1', MI_UINT8: 'u1', MI_INT16: 'i2', MI_UINT16: 'u2', MI_INT32: 'i4',
               MI_UINT32: 'u4', MI_SINGLE: 'f4', MI_DOUBLE: 'f8', MI_INT64: 'i8', MI_UINT64: 'u8'}

# Array classes found in the array-flags sub-element ("MATLAB Array Types").
MX_CELL, MX_STRUCT, MX_OBJECT, MX_CHAR, MX_SPARSE = 1, 2, 3, 4, 5
MX_NUMERIC = {6: 'f8', 7: 'f4', 8: 'i1', 9: 'u1', 10: 'i2', 11: 'u2', 12: 'i4', 13: 'u4', 14: 'i8', 15: 'u8'}
LOGICAL_FLAG, COMPLEX_FLAG = 0x02, 0x08  # bits of the flags byte


class MatFileError(ValueError):
    """The file is not a MATLAB v5 file we can read (one line says why)."""


# --------------------------------------------------------------------------------------------- reading
class _Reader:
    """Walks the elements of one byte string; `endian` is '<' or '>' from the file header."""

    def __init__(self, data: bytes, endian: str):
        self.data, self.pos, self.endian = data, 0, endian

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def element(self) -> tuple[int, bytes]:
        """Return (data type, payload) of the next element and move past its padding."""
        if self.pos + 8 > len(self.data):
            raise MatFileError('truncated MAT file: an element tag runs past the end')
        first = struct.unpack_from(self.endian + 'I', self.data, self.pos)[0]
        if first >> 16:  # small data element: 2-byte count, 2-byte type, 4 data bytes in the tag itself
            nbytes, mtype = first >> 16, first & 0xFFFF
            payload = self.data[self.pos + 4:self.pos + 4 + nbytes]
            self.pos += 8
            return mtype, payload
        mtype, nbytes = struct.unpack_from(self.endian + 'II', self.data, self.pos)
        start = self.pos + 8
        if start + nbytes > len(self.data):
            raise MatFileError('truncated MAT file: an element is longer than the file')
        # Compressed elements are not padded; everything else is padded to 8 bytes.
        self.pos = start + nbytes if mtype == MI_COMPRESSED else start + (nbytes + 7) // 8 * 8
        return mtype, self.data[start:start + nbytes]

    def numbers(self) -> np.ndarray:
        mtype, payload = self.element()
        if mtype not in NUMPY_OF_MI:
            raise MatFileError(f'expected a numeric sub-element, found data type {mtype}')
        return np.frombuffer(payload, dtype=np.dtype(NUMPY_OF_MI[mtype]).newbyteorder(self.endian))


def _read_matrix(payload: bytes, endian: str) -> tuple[str, Any]:
    """Decode one miMATRIX payload into (name, python value)."""
    if not payload:  # an empty matrix may be written as a bare tag
        return '', np.zeros((0, 0))
    r = _Reader(payload, endian)
    flags_word = int(r.numbers()[0])
    mx_class, flags = flags_word & 0xFF, (flags_word >> 8) & 0xFF
    dims = tuple(int(d) for d in r.numbers())
    name = bytes(r.element()[1]).decode('ascii', 'replace')
    count = int(np.prod(dims))
    if mx_class in MX_NUMERIC:
        if flags & COMPLEX_FLAG:
            raise MatFileError(f'complex array {name!r} is not supported')
        if r.at_end():  # an empty array may omit its data sub-element
            return name, np.zeros(dims, dtype=MX_NUMERIC[mx_class])
        values = r.numbers().astype(MX_NUMERIC[mx_class])  # stored type may be narrower than the class
        array = values.reshape(dims, order='F')
        return name, array.astype(bool) if flags & LOGICAL_FLAG else array
    if mx_class == MX_CHAR:
        mtype, raw = r.element() if count else (MI_UINT16, b'')
        return name, _decode_chars(mtype, raw, dims, endian)
    if mx_class == MX_CELL:
        return name, [_read_matrix(_expect_matrix(r), endian)[1] for _ in range(count)]
    if mx_class == MX_STRUCT:
        field_len = int(r.numbers()[0])
        raw_names = r.element()[1]
        fields = [raw_names[i:i + field_len].split(b'\0')[0].decode('ascii')
                  for i in range(0, len(raw_names), field_len)]
        return name, [{f: _read_matrix(_expect_matrix(r), endian)[1] for f in fields} for _ in range(count)]
    raise MatFileError(f'array {name!r} has MATLAB class {mx_class} (sparse/object), which is not supported')


def _expect_matrix(r: _Reader) -> bytes:
    mtype, payload = r.element()
    if mtype != MI_MATRIX:
        raise MatFileError(f'expected a matrix inside a cell or struct, found data type {mtype}')
    return payload


def _decode_chars(mtype: int, raw: bytes, dims: tuple[int, ...], endian: str) -> str | list[str]:
    """A char array is 2-D (rows x cols, column-major); one row comes back as a str, several as a list."""
    if mtype in (MI_UTF8, MI_UINT8, MI_INT8):
        text = bytes(raw).decode('utf-8')
    elif mtype in (MI_UINT16, MI_UTF16):
        text = bytes(raw).decode('utf-16-le' if endian == '<' else 'utf-16-be')
    elif mtype == MI_UTF32:
        text = bytes(raw).decode('utf-32-le' if endian == '<' else 'utf-32-be')
    else:
        raise MatFileError(f'unexpected data type {mtype} for characters')
    rows = dims[0] if dims else 0
    if rows <= 1:
        return text
    grid = np.array(list(text)).reshape(dims[:2], order='F')  # (rows, cols)
    return [''.join(row) for row in grid]


def loadmat(source: str | Path | bytes) -> dict[str, Any]:
    """Read every named variable of a MATLAB v5 .mat file, given its path or its bytes (see the module
    docstring for the value types)."""
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    path = 'the MAT data' if isinstance(source, (bytes, bytearray)) else source
    if len(data) < 128 or not data.startswith(b'MATLAB 5.0 MAT-file'):
        if data[:8] == b'\x89HDF\r\n\x1a\n' or b'MATLAB 7.3' in data[:128]:
            raise MatFileError(f'{path} is a MATLAB 7.3 (HDF5) file; only level-5 files are supported')
        raise MatFileError(f'{path} is not a MATLAB 5.0 MAT-file (header does not start with "MATLAB 5.0")')
    # Bytes 126-127 hold 'MI' written as a 16-bit number, so reading 'IM' means little-endian.
    endian = {b'IM': '<', b'MI': '>'}.get(data[126:128])
    if endian is None:
        raise MatFileError(f'{path}: unknown byte-order mark {data[126:128]!r}')
    out: dict[str, Any] = {}
    r = _Reader(data[128:], endian)
    while not r.at_end():
        mtype, payload = r.element()
        if mtype == MI_COMPRESSED:
            try:
                payload = zlib.decompressobj().decompress(payload)
            except zlib.error as e:
                raise MatFileError(f'{path}: corrupt compressed element ({e})') from None
            mtype, payload = _Reader(payload, endian).element()
        if mtype == MI_MATRIX:
            name, value = _read_matrix(payload, endian)
            out[name] = value
    return out


# --------------------------------------------------------------------------------------------- writing
def _element(mtype: int, payload: bytes) -> bytes:
    pad = b'\0' * (-len(payload) % 8)
    return struct.pack('<II', mtype, len(payload)) + payload + pad


def _matrix(name: str, value: Any) -> bytes:
    """Encode a value as an miMATRIX element (little-endian)."""
    if isinstance(value, str):
        mx_class, dims, body = MX_CHAR, (1, len(value)), _element(MI_UINT16, value.encode('utf-16-le'))
    elif isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], dict)):
        records = [value] if isinstance(value, dict) else value
        fields = list(records[0])
        width = max(len(f) for f in fields) + 1  # names are NUL-padded to one common length
        names = b''.join(f.encode('ascii').ljust(width, b'\0') for f in fields)
        body = _element(MI_INT32, struct.pack('<i', width)) + _element(MI_INT8, names)
        body += b''.join(_matrix('', rec[f]) for rec in records for f in fields)
        mx_class, dims = MX_STRUCT, (len(records), 1)
    elif isinstance(value, list):
        mx_class, dims = MX_CELL, (len(value), 1)
        body = b''.join(_matrix('', v) for v in value)
    else:
        array = np.asarray(value, dtype=np.float64)
        array = array.reshape(1, -1) if array.ndim <= 1 else array  # 1-D becomes a row, like scipy
        mx_class, dims = 6, array.shape
        body = _element(MI_DOUBLE, array.astype('<f8').tobytes(order='F'))
    flags = _element(MI_UINT32, struct.pack('<II', mx_class, 0))
    head = flags + _element(MI_INT32, struct.pack(f'<{len(dims)}i', *dims))
    head += _element(MI_INT8, name.encode('ascii'))
    return _element(MI_MATRIX, head + body)


def savemat(path: str | Path | BinaryIO, variables: dict[str, Any], compress: bool = True) -> None:
    """Write variables (numbers/arrays, str, list of dicts = struct array, list = cell) as a v5 .mat file
    to a path or an open binary file."""
    text = f'MATLAB 5.0 MAT-file, written by minideit data_scripts, {time.asctime()}'.encode('ascii')
    header = text.ljust(116, b' ') + b'\0' * 8 + struct.pack('<H', 0x0100) + b'IM'
    body = b''
    for name, value in variables.items():
        element = _matrix(name, value)
        if compress:  # MATLAB's default since v7: each top-level variable is one zlib stream
            packed = zlib.compress(element)
            element = struct.pack('<II', MI_COMPRESSED, len(packed)) + packed
        body += element
    if hasattr(path, 'write'):
        path.write(header + body)
    else:
        Path(path).write_bytes(header + body)
