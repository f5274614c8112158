"The training monitor (issue 23 item 7) on tiny Hugging Face models: norms every k steps, reports every K, removal, records, refusals."
import math, sys
import pandas as pd, pytest, torch
import torch.nn as nn, torch.nn.functional as F
from adam_implicit_bias import optim
from adam_implicit_bias.fields import gradient_norms, memory_coefficients
from adam_implicit_bias.monitor import NORMS, ImplicitBiasMonitor, group_norms

transformers = pytest.importorskip('transformers')
transformers.logging.set_verbosity_error()


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "These models are tiny: on a shared machine one thread runs them several times faster than two; restored afterwards."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
from test_report import text_batch, tiny_bert  # noqa: E402


def fine_tune(model, opt, batch, steps):
    for _ in range(steps):
        opt.zero_grad(); model(**batch).loss.backward(); opt.step()


def hf_groups(model, weight_decay=0.01):
    "The usual Hugging Face split: no weight decay on biases and LayerNorm weights."
    no_decay = [p for k, p in model.named_parameters() if k.endswith('bias') or 'LayerNorm' in k]
    decay = [p for k, p in model.named_parameters() if not (k.endswith('bias') or 'LayerNorm' in k)]
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]


def test_bert_with_torch_adamw_every_k_steps_and_removal():
    bert, batch = tiny_bert().train(), text_batch()
    opt = torch.optim.AdamW(hf_groups(bert), lr=1e-3)
    with ImplicitBiasMonitor(opt, every=3) as mon:
        fine_tune(bert, opt, batch, 7)
        grads = [p.grad for p in opt.param_groups[1]['params']]
    fine_tune(bert, opt, batch, 3)                                       # removed: nothing more
    norms = mon.norms
    assert list(norms.n) == [0, 0, 3, 3, 6, 6] and list(norms.group) == [0, 1] * 3
    assert (norms.perturbed_one_norm <= norms.one_norm).all()              # ε outside: ψ(g) = Σ |g| − ε ln(1 + |g|/ε) ≤ ‖g‖₁
    assert (norms[['one_norm', 'two_norm']] > 0).all().all() and norms.dead_share.between(0, 1).all()
    last = group_norms(grads, 1e-8, eps_inside=False)                    # the record is the gradient the step used
    assert norms.one_norm.iloc[-1] == pytest.approx(last[1].item(), rel=1e-12)
    with ImplicitBiasMonitor(opt, every=5, report_every=2, model=bert, batch=batch) as mon:   # AdamW's own field (SPEC §3c)
        fine_tune(bert, opt, batch, 3)
    assert list(mon.reports.n) == [10, 12] and mon.reports.c_n.notna().all()
    assert not mon.full_reports[0][1].groups.eps_inside.any() and list(mon.full_reports[0][1].groups.weight_decay) == [0.01, 0.0]


def test_bert_with_our_adam_reports_every_k_steps_and_the_run_is_unchanged(tmp_path):
    "The full report every 2 steps; with dropout in BERT the monitored run is bit for bit the unmonitored one."
    batch = text_batch()
    plain, watched = tiny_bert().train(), tiny_bert().train()
    opts = [optim.Adam(m.parameters(), lr=1e-3, betas=(0.9, 0.99)) for m in (plain, watched)]
    mon = ImplicitBiasMonitor(opts[1], every=1, report_every=2, model=watched, batch=batch, tensorboard=None)
    for model, opt in zip((plain, watched), opts):
        torch.manual_seed(5); fine_tune(model, opt, batch, 5)
    mon.remove()
    for a, b in zip(plain.state_dict().values(), watched.state_dict().values()): assert torch.equal(a, b)
    reports = mon.reports
    assert list(reports.n) == [0, 2, 4] and reports.c_n[0] == 0
    assert reports.c_n[2] == pytest.approx(memory_coefficients(0.9, 4) - memory_coefficients(0.99, 4))
    assert len(mon.full_reports) == 3 and len(mon.full_reports[-1][1].layers) == len(list(watched.parameters()))
    mon.to_csv(tmp_path / 'norms.csv', tmp_path / 'reports.csv')
    assert list(pd.read_csv(tmp_path / 'norms.csv').columns) == ['n', 'group', *NORMS]
    assert len(pd.read_csv(tmp_path / 'reports.csv')) == 3


def test_every_100_does_nothing_on_other_steps():
    torch.manual_seed(0)
    mlp, x, y = nn.Linear(4, 3), torch.randn(8, 4), torch.randint(0, 3, (8,))
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3)
    calls = []
    mon = ImplicitBiasMonitor(opt, every=100)
    real, mon._write = mon._write, lambda *a: calls.append(a) or real(*a)
    for _ in range(250):
        opt.zero_grad(); F.cross_entropy(mlp(x), y).backward(); opt.step()
    assert list(mon.norms.n) == [0, 100, 200] and len(calls) == 3 and mon.steps == 250


def test_norms_agree_with_fields_gradient_norms():
    "float32 sums, accurate to about 1e-7 (foreach_norm's were off by 1e-4), on a gradient with dead and g² ≪ ε components."
    torch.manual_seed(0)
    grads = [torch.randn(300, 300) * 1e-3, torch.randn(1000) * 1e-6, torch.zeros(50)]
    got = dict(zip(NORMS, group_norms(grads, 1e-8).tolist()))
    live = torch.cat([g.flatten() for g in grads[:2]])
    ref = gradient_norms(live, 1e-8)
    for k in ('perturbed_one_norm', 'one_norm', 'two_norm'):
        extra = 50 * 1e-4 if k == 'perturbed_one_norm' else 0.0       # each dead component adds √ε to ‖g‖_1,ε
        assert got[k] == pytest.approx(getattr(ref, k) + extra, rel=1e-6), k
    assert got['small_eps_share'] == pytest.approx(ref.small_eps_share, rel=1e-12)
    assert got['dead_share'] == pytest.approx(50 / (90000 + 1000 + 50))


def test_refusals_and_tensorboard():
    mlp = nn.Linear(4, 3)
    with pytest.raises(TypeError, match="got torch.optim.sgd.SGD"): ImplicitBiasMonitor(torch.optim.SGD(mlp.parameters(), lr=0.1))
    from adam_implicit_bias.penalty import PenalizedAdam
    with pytest.raises(TypeError, match="PenalizedAdam"): ImplicitBiasMonitor(PenalizedAdam(mlp.parameters(), penalty=0.1))
    with pytest.raises(ValueError, match="every must be"): ImplicitBiasMonitor(torch.optim.Adam(mlp.parameters()), every=0)


def test_without_tensorboard_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)   # as if the package were not installed
    with pytest.raises(ImportError, match="pip install tensorboard"):
        ImplicitBiasMonitor(torch.optim.Adam(nn.Linear(4, 3).parameters()), tensorboard='runs/x')


def test_records_reach_tensorboard(tmp_path):
    "Every norm the monitor records is a TensorBoard scalar at its step, read back from the event file."
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    torch.manual_seed(0)
    mlp, x, y = nn.Linear(4, 3), torch.randn(16, 4), torch.randint(0, 3, (16,))
    opt = torch.optim.AdamW(mlp.parameters(), lr=1e-2)
    with ImplicitBiasMonitor(opt, every=2, tensorboard=tmp_path/'tb') as mon:
        for _ in range(6):
            opt.zero_grad(); nn.functional.cross_entropy(mlp(x), y).backward(); opt.step()
    acc = EventAccumulator(str(tmp_path/'tb')); acc.Reload()
    tags = acc.Tags()['scalars']
    assert tags, "no scalars were written"
    table = mon.norms
    for tag in tags:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == table['n'].tolist()   # one group: one row per firing
