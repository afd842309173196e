"""Loading user data files: every format, and a one-line error for every problem."""

from __future__ import annotations

import numpy as np
import pytest

from pushforward.data import load_array
from pushforward.data.files import split_npz_key

DATA = np.array([[1.0, 2.5], [-3.0, 4.0], [5.0, 6.0e-3]])


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def error_of(path, exception=ValueError, **kwargs) -> str:
    with pytest.raises(exception) as info:
        load_array(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- formats ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
def test_npy_any_real_dtype_becomes_float64(tmp_path, dtype):
    path = tmp_path / "x.npy"
    np.save(path, DATA.astype(dtype))
    array = load_array(path)
    assert array.dtype == np.float64 and array.flags.c_contiguous
    np.testing.assert_array_equal(array, DATA.astype(dtype).astype(np.float64))


def test_npz_single_array_and_named_key(tmp_path):
    np.savez(tmp_path / "one.npz", data=DATA)
    np.testing.assert_array_equal(load_array(tmp_path / "one.npz"), DATA)
    np.testing.assert_array_equal(load_array(f"{tmp_path / 'one.npz'}:data"), DATA)
    np.savez(tmp_path / "two.npz", train=DATA, test=2 * DATA)
    np.testing.assert_array_equal(load_array(f"{tmp_path / 'two.npz'}:test"), 2 * DATA)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("plain.csv", "1,2.5\n-3,4\n5,6e-3\n"),
        ("header.csv", "x,y\n1,2.5\n-3,4\n5,6e-3\n"),
        ("quoted.csv", '"x", "y"\n"1", 2.5\n-3 , 4\n5,6e-3'),
        ("index.csv", ",y\n1,2.5\n-3,4\n5,6e-3\n"),
        ("comments.csv", "# made by hand\n\nx,y\n1,2.5\n\n-3,4\n# note\n5,6e-3\n"),
        ("spaces.txt", "1  2.5\n-3\t4\n 5 6e-3\n"),
        ("tabs.tsv", "a\tb\n1\t2.5\n-3\t4\n5\t6e-3\n"),
        ("bom.csv", "\ufeffx,y\r\n1,2.5\r\n-3,4\r\n5,6e-3\r\n"),
    ],
)
def test_delimited_text(tmp_path, name, text):
    np.testing.assert_array_equal(load_array(write(tmp_path, name, text)), DATA)


def test_images_need_ndim_none(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((4, 1, 8, 8)))
    assert load_array(tmp_path / "images.npy", ndim=None).shape == (4, 1, 8, 8)
    assert "4 dimensions" in error_of(tmp_path / "images.npy")


def test_npz_key_is_split_only_for_npz(tmp_path):
    assert split_npz_key("a/b.npz:train") == (tmp_path.__class__("a/b.npz"), "train")
    assert split_npz_key("c:/data/x.csv")[1] is None
    odd = tmp_path / "odd.npz:name"  # a file whose name holds a colon loads as written
    with open(odd, "wb") as file:
        np.savez(file, DATA)
    assert split_npz_key(odd)[1] is None


# -- errors ----------------------------------------------------------------


def test_missing_file(tmp_path):
    message = error_of(tmp_path / "nope.csv", FileNotFoundError)
    assert "nope.csv" in message and "does not exist" in message
    assert "does not exist" in error_of(f"{tmp_path / 'gone.npz'}:a", FileNotFoundError)


def test_empty_file(tmp_path):
    assert "is empty" in error_of(write(tmp_path, "e.csv", ""))
    assert "is empty" in error_of(write(tmp_path, "e.npy", b""))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\n\n# only comments\n", "no rows"),
        ("x,y\n", "header line but no rows"),
    ],
)
def test_no_rows_in_text(tmp_path, text, expected):
    assert expected in error_of(write(tmp_path, "d.csv", text))


def test_no_rows_in_array(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((0, 2)))
    assert "no rows" in error_of(tmp_path / "z.npy")
    np.save(tmp_path / "w.npy", np.zeros((3, 0)))
    assert "no values per row" in error_of(tmp_path / "w.npy")


def test_non_numeric_cell_names_line_and_column(tmp_path):
    message = error_of(write(tmp_path, "d.csv", "x,y\n1,2\n3,abc\n"))
    assert "non-numeric value 'abc' at line 3, column 2" in message
    message = error_of(write(tmp_path, "d.csv", "1,2\n3,\n"))
    assert "empty value at line 2, column 2" in message


def test_nan_and_inf_are_counted_with_first_position(tmp_path):
    message = error_of(write(tmp_path, "d.csv", "x,y\n1,2\n3,nan\ninf,4\n"))
    assert "2 NaN/Inf values" in message and "line 3, column 2" in message
    values = np.zeros((5, 3))
    values[3, 1] = np.inf
    np.save(tmp_path / "d.npy", values)
    message = error_of(tmp_path / "d.npy")
    assert "1 NaN/Inf value;" in message and "row 3, column 1 (counting from 0)" in message


def test_ragged_rows(tmp_path):
    message = error_of(write(tmp_path, "d.csv", "1,2\n3,4\n5,6,7\n"))
    assert "line 3 has 3 values, expected 2" in message
    message = error_of(write(tmp_path, "d.csv", "a,b,c\n1,2\n"))
    assert "header" in message and "3 names" in message


def test_wrong_ndim(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(4.0))
    assert "reshape a single feature to (n, 1)" in error_of(tmp_path / "v.npy")
    np.save(tmp_path / "s.npy", np.float64(3.0))
    assert "shape ()" in error_of(tmp_path / "s.npy")
    np.save(tmp_path / "t.npy", np.zeros((2, 3, 4)))
    assert "3 dimensions" in error_of(tmp_path / "t.npy")


def test_unsupported_extension_and_directory(tmp_path):
    message = error_of(write(tmp_path, "d.json", "[1, 2]"))
    assert "unsupported extension '.json'" in message and ".npy" in message
    assert "is a directory" in error_of(tmp_path)


def test_several_arrays_without_key_lists_them(tmp_path):
    np.savez(tmp_path / "two.npz", train=DATA, test=DATA)
    message = error_of(tmp_path / "two.npz")
    assert "2 arrays (train, test)" in message and "two.npz:train" in message
    message = error_of(f"{tmp_path / 'two.npz'}:valid")
    assert "no array 'valid'" in message and "train, test" in message
    np.savez(tmp_path / "none.npz")
    assert "holds no arrays" in error_of(tmp_path / "none.npz")


def test_a_key_only_applies_to_npz(tmp_path):
    path = write(tmp_path, "d.csv", "1,2\n")
    assert "d.csv:a' does not exist" in error_of(f"{path}:a", FileNotFoundError)


def test_unreadable_contents(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "Python objects" in error_of(tmp_path / "objects.npy")
    assert "not a readable .npy" in error_of(write(tmp_path, "bad.npy", b"not numpy at all"))
    assert "not a readable .npz" in error_of(write(tmp_path, "bad.npz", b"PK\x03\x04garbage"))
    assert "not UTF-8" in error_of(write(tmp_path, "bad.csv", b"1,2\n\xff\xfe,3\n"))
    np.save(tmp_path / "text.npy", np.array([["a", "b"]]))
    assert "holds text" in error_of(tmp_path / "text.npy")
    np.save(tmp_path / "complex.npy", np.ones((2, 2), dtype=complex))
    assert "complex numbers" in error_of(tmp_path / "complex.npy")
