import pytest, torch


@pytest.fixture
def float64_default():
    "Compute in float64 within a test; the default dtype is restored afterwards, so other test files are unaffected."
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)
