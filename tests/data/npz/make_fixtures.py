#!/usr/bin/python3
"""Writes the .npz fixtures of tests/test_npz.c with numpy and Python's zipfile (run once; the
outputs are committed). The good archives hold the same arrays (values defined in test_npz.c
too); each bad archive holds a good member 'ok' first and then the member the error must name."""
import io
import zipfile

import numpy as np
from numpy.lib import format as npf


def good_arrays():
    return {
        "f32_2d": np.arange(12, dtype=np.float32).reshape(3, 4) * np.float32(0.5) - np.float32(3),
        "f64_1d": np.arange(5, dtype=np.float64) / 3.0,
        "i32_2d": ((np.arange(6, dtype=np.int32) - 3) * 1000003).reshape(2, 3),
        "i64_1d": np.array([-2**31, 0, 7, 2**31 - 1], dtype=np.int64),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "fortran_3d": np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 0.25),
        "fortran_f64_2d": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "alphafold/x/y//weights": np.arange(4, dtype=np.float32).reshape(1, 2, 2),
    }


def npy_bytes(arr, version=None):
    b = io.BytesIO()
    npf.write_array(b, arr, version=version, allow_pickle=True)
    return b.getvalue()


def raw_npy(header_dict_text, data, version=(1, 0)):
    """A .npy member with a hand-written header dictionary (for malformed headers)."""
    h = header_dict_text.encode("latin1")
    hlen = len(h) + 1
    pad = 64 - (10 + hlen) % 64
    return b"\x93NUMPY\x01\x00" + (hlen + pad).to_bytes(2, "little") + h + b" " * pad + b"\n" + data


def write_zip(path, members, compression=zipfile.ZIP_STORED, last_compression=None):
    """last_compression: a different compression for the last member only."""
    with zipfile.ZipFile(path, "w") as z:
        for i, (name, data) in enumerate(members):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            if last_compression is not None and i == len(members) - 1:
                info.compress_type = last_compression
            z.writestr(info, data)


ok = ("ok.npy", npy_bytes(np.arange(3, dtype=np.float32)))

# Good archives: numpy's own deflated writer; a ZIP64 archive from zipfile with its thresholds
# lowered so every size and offset goes through ZIP64 records; .npy versions 2.0 and 3.0.
np.savez_compressed("good_compressed.npz", **good_arrays())
saved = (zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT)
zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 0, 0
write_zip("good_zip64.npz", [(k + ".npy", npy_bytes(v)) for k, v in good_arrays().items()])
zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = saved
write_zip("good_versions.npz",
          [(k + ".npy", npy_bytes(v, version=(2, 0) if i % 2 else (3, 0)))
           for i, (k, v) in enumerate(good_arrays().items())])

# Unsupported element types.
for tag, arr in [("u1", np.arange(4, dtype=np.uint8)),
                 ("f2", np.arange(4, dtype=np.float16)),
                 ("bigendian", np.arange(4, dtype=">f4")),
                 ("complex", np.arange(4, dtype=np.complex64)),
                 ("bool", np.array([True, False])),
                 ("structured", np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")])),
                 ("object", np.array([{"a": 1}, None], dtype=object)),
                 ("i64_overflow", np.array([1, 2**31], dtype=np.int64))]:
    write_zip(f"dtype_{tag}.npz", [ok, ("bad_member.npy", npy_bytes(arr))])

# Malformed .npy members.
write_zip("header_magic.npz", [ok, ("bad_member.npy", b"\x93NUMPX\x01\x00" + b"\x00" * 120)])
write_zip("header_version.npz", [ok, ("bad_member.npy", b"\x93NUMPY\x04\x00" + b"\x00" * 120)])
write_zip("header_no_shape.npz",
          [ok, ("bad_member.npy", raw_npy("{'descr': '<f4', 'fortran_order': False, }", b"\0" * 8))])
write_zip("header_garbage.npz",
          [ok, ("bad_member.npy", raw_npy("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }",
                                          b"\0" * 8))])
write_zip("header_short_data.npz",
          [ok, ("bad_member.npy", raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (100,), }",
                                          b"\0" * 16))])
write_zip("header_trailing_data.npz",
          [ok, ("bad_member.npy", raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
                                          b"\0" * 12))])

# Archive-level errors: a CRC mismatch (one data byte of the second member flipped after writing),
# an unsupported compression method, and a file that is no zip archive at all.
write_zip("bad_crc.npz", [ok, ("bad_member.npy", npy_bytes(np.arange(64, dtype=np.float32)))])
raw = bytearray(open("bad_crc.npz", "rb").read())
with zipfile.ZipFile("bad_crc.npz") as z:
    info = z.getinfo("bad_member.npy")
data_at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
raw[data_at + 128 + 4 * 10] ^= 0x40  # inside the array data (the .npy header is 128 bytes)
open("bad_crc.npz", "wb").write(bytes(raw))
write_zip("method_bzip2.npz", [ok, ("bad_member.npy", npy_bytes(np.arange(8, dtype=np.float32)))],
          last_compression=zipfile.ZIP_BZIP2)
open("not_a_zip.npz", "w").write("this is a text file, not a zip archive\n" * 4)
