"Issue 24: faults found by hostile probing that cut across modules: a cache folder replaced by a file, signals to sweeps."
import os, signal, subprocess, sys, time
from pathlib import Path

import pytest

from adam_implicit_bias import closeness as C
from adam_implicit_bias.files import data_dir

needs_mnist = pytest.mark.skipif(not (data_dir()/'mnist_10k.npz').exists(), reason="offline MNIST missing")
TINY_CLOSENESS = dict(n_train=20, hidden=3, seed=0, beta=0.9, rho=0.95, substeps=1, panel_a=dict(eps=0.1, h=1e-3),
                      curves=[dict(eps=0.1, T=4e-3, hs=[1e-3, 5e-4])])


@needs_mnist
def test_fault_a_closeness_folder_that_is_a_file_fails_before_any_point_is_computed(tmp_path, monkeypatch):
    "Issue 24, item 21: a closeness/ folder replaced by a file computed every point before it failed."
    (tmp_path/'closeness').write_text('not a folder')
    computed = []
    monkeypatch.setattr(C, 'closeness_point', lambda item: computed.append(item) or {})
    with pytest.raises(NotADirectoryError, match=f"the closeness cache folder {tmp_path/'closeness'} is a file, not a folder"):
        C.closeness_sweep(TINY_CLOSENESS, tmp_path, jobs=1, progress=False)
    assert computed == []
