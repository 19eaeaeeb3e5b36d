"""The stat cache: source files are hashed once while unchanged, and a change is seen even when the
file keeps its size and modification time."""
import os

from edgedistill.core.files import hash_tree
from edgedistill.core.statcache import StatCache


def photos(folder, n=5):
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / c / f"{i}.jpg").write_bytes(bytes([i]) * (100 + i))
    return folder


def test_unchanged_files_are_not_read_again(tmp_path):
    data = photos(tmp_path / "data")
    cache = StatCache(tmp_path / "store" / "cache" / "stat.sqlite")
    assert cache.hash_tree(data) == hash_tree(data)
    assert cache.hashed == 10
    again = StatCache(tmp_path / "store" / "cache" / "stat.sqlite")  # another run
    assert again.hash_tree(data) == hash_tree(data) and again.hashed == 0


def test_a_change_is_seen_even_with_size_and_mtime_kept(tmp_path):
    data = photos(tmp_path / "data")
    cache = StatCache(tmp_path / "stat.sqlite")
    before = cache.hash_tree(data)
    f = data / "a" / "3.jpg"
    st = f.stat()
    f.write_bytes(b"\xff" * st.st_size)  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # the modification time set back: ctime still moves
    after = StatCache(tmp_path / "stat.sqlite")
    assert after.hash_tree(data) == hash_tree(data) != before
    assert after.hashed == 1
    (data / "b" / "9.jpg").write_bytes(b"new")  # a new file, and one gone
    (data / "a" / "0.jpg").unlink()
    assert StatCache(tmp_path / "stat.sqlite").hash_tree(data) == hash_tree(data)


def test_a_damaged_cache_is_rebuilt(tmp_path):
    data = photos(tmp_path / "data")
    db = tmp_path / "stat.sqlite"
    db.write_bytes(b"not a database at all" * 100)
    cache = StatCache(db)
    assert cache.hash_tree(data) == hash_tree(data) and cache.hashed == 10
    assert StatCache(db).hash_tree(data) == hash_tree(data)


def test_a_database_damaged_inside_is_set_aside_and_the_files_read(tmp_path):
    data = photos(tmp_path / "data", n=200)
    db = tmp_path / "stat.sqlite"
    StatCache(db).hash_tree(data)
    raw = bytearray(db.read_bytes())
    raw[len(raw) // 2:] = b"\xff" * (len(raw) - len(raw) // 2)  # the header intact, the pages after it not
    db.write_bytes(bytes(raw))
    cache = StatCache(db)
    assert cache.hash_tree(data) == hash_tree(data) and cache.hashed == 400
    assert (tmp_path / "stat.sqlite.damaged").exists()
    assert StatCache(db).hash_tree(data) == hash_tree(data)  # a new one
