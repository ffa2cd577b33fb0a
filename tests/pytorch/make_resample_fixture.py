#!/usr/bin/python3
"""Write tests/fixtures/swin_resample.safetensors: SciPy references for the Swin relative position
bias table transfer to a new window size (microsoft/SimMIM utils.py ``remap_pretrained_keys_swin``).

Usage (SciPy / numpy from Debian's python3-scipy / python3-numpy; torch is not needed):
    /usr/bin/python3 tests/pytorch/make_resample_fixture.py [--out PATH]

For each case (window 6 -> 7 with 4 heads, 12 -> 14 with 2 heads, and two edge cases: 7 -> 6, where
the ratio pins to the lower bracket end, and 3 -> 5, where it pins to the upper end and targets lie
outside the source coordinates) a seeded N(0, 1) table of ((2*w1-1)^2, heads) is resampled to
((2*w2-1)^2, heads) exactly as the official loop does, in float64 with ``interp2d(x, y, z,
kind='cubic')`` (present up to SciPy 1.13). Before writing, the script checks (AssertionError
otherwise, nothing written):

* ``RectBivariateSpline(x, y, z.T, kx=3, ky=3, s=0)(dx, dy).T`` (the SciPy >= 1.14 replacement)
  agrees with interp2d;
* its knots are the data points without the second and second-to-last (boundary knots fourfold),
  i.e. FITPACK's s=0 spline is the not-a-knot spline, and a tensor product of 1-D
  ``CubicSpline(bc_type='not-a-knot')`` (each row along x, then each column along y) agrees with it
  (targets clamped to the source range, as FITPACK's evaluator does);
* the official pipeline (table -> float32 -> interp2d -> float32) is reproduced by rounding;
* the documented ratios q = 1.091281 (6 -> 7) and 1.032893 (12 -> 14);
* the written file reloads bit-exactly and is < 50 KiB.

See tests/pytorch/README.md ("swin_resample").
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import warnings

import numpy as np
import scipy
from scipy import interpolate

SEED = 20240607
MAX_FILE_BYTES = 50 * 1024
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "swin_resample.safetensors")

# (prefix of the names, source window, target window, heads)
CASES = [
    ("", 6, 7, 4),          # table6 -> table7_scipy, q_6_7
    ("", 12, 14, 2),        # table12 -> table14_scipy, q_12_14
    ("down7to6.", 7, 6, 1),  # q pinned near 1.01
    ("up3to5.", 3, 5, 1),    # q pinned near 1.5; targets beyond the source range (clamped)
]


# ---------------------------------------------------------------------------------------------
# The official code, transcribed line by line from microsoft/SimMIM utils.py remap_pretrained_keys_swin
# (torch replaced by numpy; `as_float32` selects the official `.float()` / `torch.Tensor(...)` casts).
# ---------------------------------------------------------------------------------------------
def official_geometry(src_size, dst_size):
    def geometric_progression(a, r, n):
        return a * (1.0 - r ** n) / (1.0 - r)

    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        gp = geometric_progression(1, q, src_size // 2)
        if gp > dst_size // 2:
            right = q
        else:
            left = q

    dis = []
    cur = 1
    for i in range(src_size // 2):
        dis.append(cur)
        cur += q ** (i + 1)

    r_ids = [-_ for _ in reversed(dis)]
    x = r_ids + [0] + dis
    y = r_ids + [0] + dis

    t = dst_size // 2.0
    dx = np.arange(-t, t + 0.1, 1.0)
    dy = np.arange(-t, t + 0.1, 1.0)
    return q, x, y, dx, dy


def official_resample(table, src_window, dst_window, as_float32):
    """(L1, nH) -> (L2, nH) as remap_pretrained_keys_swin does it with interp2d."""
    L1, nH = table.shape
    src_size, dst_size = 2 * src_window - 1, 2 * dst_window - 1
    assert int(L1 ** 0.5) == src_size
    q, x, y, dx, dy = official_geometry(src_size, dst_size)
    heads = []
    for i in range(nH):
        z = table[:, i].reshape(src_size, src_size)
        if as_float32:
            z = z.astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            f_cubic = interpolate.interp2d(x, y, z, kind='cubic')
            new = f_cubic(dx, dy)
        heads.append(np.ascontiguousarray(new).reshape(-1, 1))
    out = np.concatenate(heads, axis=-1)
    return q, (out.astype(np.float32) if as_float32 else out)


# ---------------------------------------------------------------------------------------------
# Independent checks of the method
# ---------------------------------------------------------------------------------------------
def rect_bivariate(table, src_window, dst_window):
    src_size, dst_size = 2 * src_window - 1, 2 * dst_window - 1
    _, x, y, dx, dy = official_geometry(src_size, dst_size)
    heads, knots = [], None
    for i in range(table.shape[1]):
        z = table[:, i].reshape(src_size, src_size)
        spline = interpolate.RectBivariateSpline(x, y, z.T, kx=3, ky=3, s=0)
        knots = spline.get_knots()
        heads.append(spline(dx, dy).T.reshape(-1, 1))
    return np.concatenate(heads, axis=-1), knots, np.asarray(x, dtype=np.float64)


def tensor_not_a_knot(table, src_window, dst_window):
    """Rows (fixed y) interpolated along x with a 1-D not-a-knot CubicSpline, then columns along y."""
    src_size, dst_size = 2 * src_window - 1, 2 * dst_window - 1
    _, x, y, dx, dy = official_geometry(src_size, dst_size)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    tx = np.clip(dx, x[0], x[-1])
    ty = np.clip(dy, y[0], y[-1])
    heads = []
    for i in range(table.shape[1]):
        z = table[:, i].reshape(src_size, src_size)          # z[row = y, column = x]
        rows = interpolate.CubicSpline(x, z, axis=1, bc_type='not-a-knot')(tx)   # (src, dst)
        full = interpolate.CubicSpline(y, rows, axis=0, bc_type='not-a-knot')(ty)  # (dst, dst)
        heads.append(full.reshape(-1, 1))
    return np.concatenate(heads, axis=-1)


# ---------------------------------------------------------------------------------------------
# safetensors with numpy only (8-byte LE header length, JSON header padded with spaces to a multiple
# of 8, raw little-endian C-contiguous data)
# ---------------------------------------------------------------------------------------------
_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4")}


def save_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        dtype = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32"}[array.dtype]
        raw = np.ascontiguousarray(array).astype(_DTYPES[dtype], copy=False).tobytes(order="C")
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def load_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    data = buf[8 + n:]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[begin:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors, metadata


# ---------------------------------------------------------------------------------------------
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    tensors = {}
    report = []
    for prefix, w1, w2, heads in CASES:
        src, dst = 2 * w1 - 1, 2 * w2 - 1
        table = rng.standard_normal((src * src, heads))
        q, ref = official_resample(table, w1, w2, as_float32=False)
        assert ref.shape == (dst * dst, heads) and ref.dtype == np.float64

        rbs, (kx, ky), x = rect_bivariate(table, w1, w2)
        expected_knots = np.concatenate([[x[0]] * 4, x[2:-2], [x[-1]] * 4])
        assert np.array_equal(kx, expected_knots) and np.array_equal(ky, expected_knots), (kx, expected_knots)
        d_rbs = np.abs(rbs - ref).max()
        assert d_rbs <= 1e-13, d_rbs
        tp = tensor_not_a_knot(table, w1, w2)
        d_tp = np.abs(tp - ref).max()
        assert d_tp <= 1e-12, d_tp

        # the official pipeline in float32 equals round(float64 spline of the float32-rounded table)
        _, official32 = official_resample(table, w1, w2, as_float32=True)
        _, from32 = official_resample(table.astype(np.float32).astype(np.float64), w1, w2, as_float32=False)
        d32 = np.abs(official32.astype(np.float64) - from32).max()
        assert np.array_equal(official32, from32.astype(np.float32)), d32
        d_f32_f64 = np.abs(official32.astype(np.float64) - ref).max()

        if prefix:
            names = (prefix + "table", prefix + "scipy", prefix + "official32", prefix + "q")
        else:
            names = (f"table{w1}", f"table{w2}_scipy", f"table{w2}_official32", f"q_{w1}_{w2}")
        tensors[names[0]] = table
        tensors[names[1]] = ref
        tensors[names[2]] = official32
        tensors[names[3]] = np.array(q, dtype=np.float64)
        report.append(f"{w1:2d} -> {w2:2d} ({src}^2 x {heads} -> {dst}^2 x {heads}): q = {q!r}; "
                      f"RectBivariateSpline - interp2d {d_rbs:.1e}, tensor CubicSpline - interp2d {d_tp:.1e}, "
                      f"official float32 - float64 {d_f32_f64:.1e}")

    assert abs(tensors["q_6_7"] - 1.091281) < 5e-7, tensors["q_6_7"]
    assert abs(tensors["q_12_14"] - 1.032893) < 5e-7, tensors["q_12_14"]
    assert tensors["down7to6.q"] < 1.0101 and tensors["up3to5.q"] > 1.4999

    metadata = {
        "generator": "tests/pytorch/make_resample_fixture.py",
        "seed": str(SEED),
        "method": "microsoft/SimMIM utils.py remap_pretrained_keys_swin: geometric coordinates, "
                  "scipy.interpolate.interp2d(x, y, z, kind='cubic') per head, in float64",
        "cases": ";".join(f"{p or 'table'}{w1}->{w2}x{h}" for p, w1, w2, h in CASES),
        "scipy_version": scipy.__version__,
        "numpy_version": np.__version__,
    }
    out_dir = os.path.dirname(os.path.abspath(args.out))
    with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".tmp", delete=False) as tmp:
        tmp_path = tmp.name
    try:
        save_safetensors(tmp_path, tensors, metadata)
        back, meta_back = load_safetensors(tmp_path)
        assert list(back) == list(tensors) and meta_back == metadata
        for name, array in tensors.items():
            assert back[name].dtype == array.dtype and back[name].shape == array.shape
            assert back[name].tobytes() == np.ascontiguousarray(array).tobytes(), name
        size = os.path.getsize(tmp_path)
        assert size < MAX_FILE_BYTES, size
        os.chmod(tmp_path, 0o644)  # NamedTemporaryFile creates 0600
        os.replace(tmp_path, args.out)
    except BaseException:
        os.unlink(tmp_path)
        raise
    for line in report:
        print(line)
    print(f"wrote {args.out} ({size} bytes, SciPy {scipy.__version__})")


if __name__ == "__main__":
    sys.exit(main())
