"The offline loaders' errors: a missing file and a corrupted file fail clearly and name the path; an intact copy loads."
import os, shutil
import numpy as np, pytest, torch
from adam_implicit_bias.data import DataChecksumError, DataMissingError, load_cifar10, load_mnist, offline_file
from adam_implicit_bias.files import data_dir

MNIST = data_dir()/'mnist_10k.npz'
needs_mnist = pytest.mark.skipif(not MNIST.exists(), reason=f"offline MNIST not in {MNIST.parent}")

def test_missing_file_names_the_folder_and_the_way_out(tmp_path):
    with pytest.raises(DataMissingError, match="mnist_10k.npz not found in") as e: load_mnist(100, root=tmp_path)
    assert str(tmp_path) in str(e.value) and "ADAM_IB_DATA" in str(e.value) and "download=True" in str(e.value)
    with pytest.raises(DataMissingError, match="cifar10_subset.npz not found"): load_cifar10(10, 10, root=tmp_path)
    assert issubclass(DataMissingError, FileNotFoundError)

@needs_mnist
def test_intact_copy_loads_a_balanced_subset(tmp_path):
    shutil.copy(MNIST, tmp_path/MNIST.name)
    x, y = load_mnist(100, root=tmp_path, dtype=torch.float64)
    assert x.shape == (100, 784) and x.dtype == torch.float64 and 0 <= x.min() <= x.max() <= 1
    assert torch.all(torch.bincount(y, minlength=10) == 10)

@needs_mnist
@pytest.mark.parametrize("where", [0.1, 0.5, 0.99])
def test_one_flipped_byte_is_detected(tmp_path, where):
    data = bytearray(MNIST.read_bytes())
    i = int(where * len(data))
    data[i] ^= 0x01
    (tmp_path/MNIST.name).write_bytes(bytes(data))
    with pytest.raises(DataChecksumError, match="corrupted") as e: load_mnist(100, root=tmp_path)
    assert str(tmp_path/MNIST.name) in str(e.value)
    with pytest.raises(DataChecksumError): offline_file('mnist', tmp_path)   # checked again, never cached as good

@needs_mnist
def test_a_file_replaced_after_a_good_load_is_checked_again(tmp_path):
    p = tmp_path/MNIST.name
    shutil.copy(MNIST, p)
    load_mnist(10, root=tmp_path)
    data = bytearray(p.read_bytes()); data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    st = p.stat(); os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # replaced a second later, same size
    with pytest.raises(DataChecksumError): load_mnist(10, root=tmp_path)
