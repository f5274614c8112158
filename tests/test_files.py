"Issue 24: checked files (a file and its SHA-256) that survive a kill at any point, read alongside today's pairs; no stray temporary files."
import hashlib, json, os, time, warnings
from pathlib import Path

import pytest

from adam_implicit_bias import files as F


def legacy_pair(path: Path, data: bytes):
    "A file and its sidecar exactly as `write_checked` wrote them before issue 24: the data, then its SHA-256 and a newline."
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data); path.with_name(path.name + '.sha256').write_text(hashlib.sha256(data).hexdigest() + '\n')


def test_a_legacy_pair_reads_as_valid(tmp_path):
    "The result caches of runs made before issue 24 stay usable."
    legacy_pair(tmp_path/'history.json', b'{"loss": [1.0, 0.5]}\n')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert F.read_checked_json(tmp_path/'history.json') == {'loss': [1.0, 0.5]}
    F.write_checked(tmp_path/'history.json', b'{"loss": [2.0]}\n')          # overwritten by the new code: still one digest
    assert (tmp_path/'history.json.sha256').read_text() == hashlib.sha256(b'{"loss": [2.0]}\n').hexdigest() + '\n'


class Killed(BaseException): "Stands for kill -9 between two writes."


@pytest.mark.parametrize('writes_before_kill', [0, 1, 2, 3])
def test_fault_a_kill_at_any_point_of_a_checked_write_keeps_a_valid_pair(tmp_path, monkeypatch, writes_before_kill):
    "Issue 24, item 2: a kill between writing a file and its digest left neither the old pair nor the new one valid."
    path = tmp_path/'checkpoint.pt'
    F.write_checked(path, b'old checkpoint')
    real, done = F.atomic_write_bytes, []
    def dies_after(p, data):
        if len(done) == writes_before_kill: raise Killed
        done.append(p); return real(p, data)
    monkeypatch.setattr(F, 'atomic_write_bytes', dies_after)
    try: F.write_checked(path, b'new checkpoint')
    except Killed: pass
    monkeypatch.setattr(F, 'atomic_write_bytes', real)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                      # no "does not match its SHA-256"
        assert F.read_checked(path) in (b'old checkpoint', b'new checkpoint')
    F.write_checked(path, b'next checkpoint')                               # and the next write makes the next pair valid
    assert F.read_checked(path) == b'next checkpoint'


def test_only_the_previous_and_the_new_bytes_are_valid_while_a_write_is_under_way(tmp_path):
    "The sidecar names both digests only between the writes; any other bytes are still refused."
    path = tmp_path/'a.json'
    F.write_checked(path, b'1')
    side = path.with_name('a.json.sha256')
    side.write_text(''.join(hashlib.sha256(b).hexdigest() + '\n' for b in (b'1', b'2')))   # as a kill mid-write leaves it
    assert F.read_checked(path) == b'1'
    path.write_bytes(b'2'); assert F.read_checked(path) == b'2'
    path.write_bytes(b'3')
    with pytest.warns(UserWarning, match='a.json does not match its SHA-256'): assert F.read_checked(path) is None


def stray(folder: Path, name: str, legacy: bool, age: float = 0) -> Path:
    "A temporary file as a killed writer of `name` leaves it (`legacy`: as the code before issue 24 named them)."
    p = folder/f".{name}.k1ll3d{'o' if legacy else 'n'}{int(age) % 10}{'.tmp' if legacy else '.locked.tmp'}"
    p.write_bytes(b'half a file')
    if age: os.utime(p, (time.time() - age, time.time() - age))
    return p


def test_fault_stray_temporary_files_are_removed_but_not_a_live_writers(tmp_path):
    "Issue 24, item 2: a kill mid-write left `.checkpoint.pt.sha256.*.tmp` behind for good."
    dead, young_legacy = stray(tmp_path, 'checkpoint.pt', legacy=False), stray(tmp_path, 'checkpoint.pt.sha256', legacy=True)
    old_legacy = stray(tmp_path, 'checkpoint.pt.sha256', legacy=True, age=2 * 3600 + 1)
    live_fd, live = F.locked_temporary(tmp_path/"checkpoint.pt"); live = Path(live)   # another process, still writing
    try:
        F.write_checked(tmp_path/'checkpoint.pt', b'state')
        assert not dead.exists() and not old_legacy.exists()                # a killed writer's temporaries go
        assert live.exists()                                                # a live writer's stays (it holds its lock) ...
        assert young_legacy.exists()                                        # ... and so may a young one of the older code
    finally: os.close(live_fd)
    F.write_checked(tmp_path/'checkpoint.pt', b'state 2')                  # its writer is gone now
    assert not live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['checkpoint.pt', 'checkpoint.pt.sha256', young_legacy.name])


def test_fault_a_results_folder_that_is_a_file_is_named(tmp_path):
    "Issue 24, item 21: a results folder replaced by a file gave a raw FileExistsError."
    (tmp_path/'results').write_text('not a folder')
    with pytest.raises(NotADirectoryError, match=f"the results folder {tmp_path/'results'} is a file, not a folder"):
        F.results_dir(tmp_path/'results')
    with pytest.raises(NotADirectoryError, match=f"cannot write .*: {tmp_path/'results'} is a file, not a folder"):
        F.write_checked_json(tmp_path/'results'/'run'/'history.json', {})


@pytest.mark.parametrize('data', [b'{"loss": [1.0, 0.', b'\xff\xfe not text'])
def test_fault_a_checked_file_that_is_not_json_is_treated_as_corrupt(tmp_path, data):
    "Issue 24, item 14: a history or cache whose bytes match its sidecar but are not JSON raised a bare JSONDecodeError."
    from adam_implicit_bias import train as T
    config = T.RunConfig(epochs=2)
    path = F.write_checked(T.run_dir(config, tmp_path)/'history.json', data)
    with pytest.warns(UserWarning, match=f"{path} matches its SHA-256 but is not JSON"):
        assert F.read_checked_json(path) is None
    with pytest.warns(UserWarning, match='history.json matches its SHA-256 but is not JSON'):
        assert T.cached_history(config, tmp_path) is None                 # so the run is recomputed, not a crash
