"The implicit-bias report on real models (issue 23): Hugging Face BERT and GPT-2 from tiny configs, dict batches, eval mode, dropout, frozen, tied and dead parameters, data sets in micro-batches, the run read from its optimizer, and clear errors."
import copy, math
import numpy as np, pytest, torch
import torch.nn as nn, torch.nn.functional as F
from adam_implicit_bias import optim
from adam_implicit_bias.fields import memory_coefficients
from adam_implicit_bias.report import implicit_bias_report, model_loss, read_optimizer

transformers = pytest.importorskip('transformers')
transformers.logging.set_verbosity_error()


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "These models are tiny: on a shared machine one thread runs them several times faster than two; restored afterwards."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_bert(dropout=0.1, seed=0):
    "A 2-layer BERT classifier with hidden size 16 (~6k parameters), random weights, built from its config: nothing downloaded."
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=16, num_labels=3, hidden_dropout_prob=dropout,
                                  attention_probs_dropout_prob=dropout)
    return transformers.BertForSequenceClassification(cfg)


def tiny_gpt2(seed=0):
    "A 2-layer GPT-2 with width 16: its output layer is tied to the token embedding."
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=16,
                                                                bos_token_id=0, eos_token_id=0))


def text_batch(n=8, length=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (n, length), generator=g)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.randint(0, 3, (n,), generator=g))

HYPER = dict(h=1e-4, beta=0.9, rho=0.999, eps=1e-8)
own_loss = lambda model, batch: model(**batch).loss


@pytest.mark.parametrize("mode", ['train', 'eval'])
def test_bert_dict_batches_in_train_and_eval_mode(mode):
    "Both Hugging Face forms (the model's own loss, loss_fn(model, batch)) give one report; eval mode's attention has a double backward."
    bert, batch = getattr(tiny_bert(), mode)(), text_batch()
    rep = implicit_bias_report(bert, None, batch, **HYPER)
    same = implicit_bias_report(bert, own_loss, batch, **HYPER)
    assert rep.loss == same.loss and rep.correction_relative == same.correction_relative
    assert math.isfinite(rep.correction_relative) and rep.regime.sign == -1
    assert list(rep.layers.index) == [k for k, _ in bert.named_parameters()]
    assert rep.layers.numel.sum() == rep.numel == sum(p.numel() for p in bert.parameters())
    assert 0 < rep.dead < rep.numel          # embedding rows of tokens not in the batch: exactly zero gradient
    with torch.no_grad(): assert rep.loss == pytest.approx(bert(**batch).loss.item(), rel=1e-6) if mode == 'eval' else True


def test_dropout_is_fixed_for_the_whole_report(float64_default):
    "SPEC §8: with a new dropout mask per pass the relative correction was 0.86 at h = 1e-12; with one random state it is O(h)."
    bert, batch = tiny_bert().double().train(), text_batch()
    state = torch.get_rng_state()
    reps = [implicit_bias_report(bert, None, batch, h=h, beta=0.9, rho=0.999, eps=1e-8) for h in (1e-12, 2e-12)]
    assert reps[0].correction_relative < 1e-5
    assert reps[1].correction_relative == pytest.approx(2 * reps[0].correction_relative, rel=1e-6)   # linear in h
    assert torch.equal(torch.get_rng_state(), state)


def test_gpt2_tied_weights_count_once_and_data_in_micro_batches():
    "The tied output layer is the embedding, counted once; a DataLoader of dict micro-batches gives the whole batch's report."
    gpt, batch = tiny_gpt2().eval(), text_batch(n=12)
    batch = dict(input_ids=batch['input_ids'], labels=batch['input_ids'])
    whole = implicit_bias_report(gpt, None, batch, **HYPER)
    assert gpt.lm_head.weight is gpt.transformer.wte.weight and 'lm_head.weight' not in whole.layers.index
    assert whole.numel == sum(p.numel() for p in gpt.parameters())
    data = torch.utils.data.DataLoader([dict(input_ids=i, labels=i) for i in batch['input_ids']], batch_size=4)
    parts = implicit_bias_report(gpt, None, data=data, **HYPER)
    # GPT-2's loss is a mean over the tokens of each micro-batch; equal micro-batches make it the mean over all tokens
    assert parts.loss == pytest.approx(whole.loss, rel=1e-5)
    assert parts.correction_relative == pytest.approx(whole.correction_relative, rel=1e-3)
    gpt.train()
    assert math.isfinite(implicit_bias_report(gpt, None, data=data, **HYPER).correction_relative)


def test_only_the_trainable_parameters_in_the_optimizer_count():
    "Frozen layers, and parameters the optimizer does not hold, are constants of the loss: the report changes when layers freeze."
    bert, batch = tiny_bert(dropout=0.0).eval(), text_batch()
    full = implicit_bias_report(bert, None, batch, **HYPER)
    bert.bert.embeddings.requires_grad_(False)
    frozen = implicit_bias_report(bert, None, batch, **HYPER)
    embeddings = sum(p.numel() for p in bert.bert.embeddings.parameters())
    assert frozen.numel == full.numel - embeddings and not any(k.startswith('bert.embeddings') for k in frozen.layers.index)
    assert frozen.correction_relative != full.correction_relative
    head = optim.Adam(bert.classifier.parameters(), lr=1e-3)
    assert implicit_bias_report(bert, None, batch, optimizer=head).numel == sum(p.numel() for p in bert.classifier.parameters())
    with pytest.raises(ValueError, match="not the model's"):
        implicit_bias_report(bert, None, batch, optimizer=optim.Adam([nn.Parameter(torch.zeros(3))]))


class Mixed(nn.Module):
    "A test model with a tied embedding/output layer, BatchNorm, dropout and a frozen layer."
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.frozen = nn.Linear(8, 8).requires_grad_(False)
        self.norm, self.drop, self.out = nn.BatchNorm1d(8), nn.Dropout(0.3), nn.Linear(8, 20, bias=False)
        self.out.weight = self.embed.weight                                     # tied
    def forward(self, tokens): return self.out(self.drop(self.norm(torch.tanh(self.frozen(self.embed(tokens).mean(1))))))


def test_batchnorm_dropout_tied_and_frozen(float64_default):
    torch.manual_seed(0)
    model, tokens = Mixed().train(), torch.randint(0, 20, (16, 5))
    batch, before, state = (tokens, tokens[:, 0]), copy.deepcopy(model.state_dict()), torch.get_rng_state()
    rep = implicit_bias_report(model, F.cross_entropy, batch, h=1e-12, beta=0.9, rho=0.999, eps=1e-8)
    assert rep.numel == 20 * 8 + 8 + 8 and list(rep.layers.index) == ['embed.weight', 'norm.weight', 'norm.bias']
    assert rep.correction_relative < 1e-6                                      # dropout fixed
    for k, v in model.state_dict().items(): assert torch.equal(v, before[k]), k   # BatchNorm's statistics untouched
    assert torch.equal(torch.get_rng_state(), state)


class DeadKernels(nn.Module):
    "resnet18's case (SPEC §8): the last 3×3 convolution sees a 1×1 feature map, so 8 of its 9 taps get exactly zero gradient."
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)
    def forward(self, x): return self.head(self.conv2(torch.tanh(self.conv1(x))).flatten(1))


def test_dead_components_are_set_apart(float64_default):
    torch.manual_seed(0)
    model, x, y = DeadKernels(), torch.randn(16, 3, 2, 2), torch.randint(0, 4, (16,))
    rep = implicit_bias_report(model, F.cross_entropy, (x, y), h=1e-3, beta=0.9, rho=0.999, eps=1e-8)
    assert rep.layers.loc['conv2.weight', 'dead_share'] == pytest.approx(8 / 9)
    assert rep.layers.loc['conv1.weight', 'dead_share'] == pytest.approx(5 / 9)      # conv1's taps on the padding, too
    assert rep.dead == 8 * 8 * 8 + 8 * 3 * 5
    # the verdict and the regime use the live components only
    ml = model_loss(model, F.cross_entropy, (x, y))
    from adam_implicit_bias.fields import first_order_field, gradient, second_order_field
    g = gradient(ml.loss, ml.theta)
    live = g != 0
    f = first_order_field(ml.loss, ml.theta, eps=1e-8)
    f2 = second_order_field(ml.loss, ml.theta, h=1e-3, beta=0.9, rho=0.999, eps=1e-8)
    assert rep.correction_relative == pytest.approx(((f2 - f)[live].norm() / f[live].norm()).item(), rel=1e-9)
    assert rep.regime.share_small_eps + rep.regime.share_large_eps <= 1 and rep.dead / rep.numel > 0.5


def test_the_run_is_read_from_the_optimizer():
    "Per-group learning rates, the step n (c_0 = 0 before the first step, c_n after), and torch's ε outside refused (issue 22)."
    bert, batch = tiny_bert(dropout=0.0).eval(), text_batch()
    groups = [{'params': bert.bert.parameters(), 'lr': 1e-4}, {'params': bert.classifier.parameters(), 'lr': 1e-3}]
    opt = optim.Adam(groups, betas=(0.9, 0.99))
    rep0 = implicit_bias_report(bert, None, batch, optimizer=opt)
    assert (rep0.n, rep0.c_n, rep0.regime) == (0, 0.0, None) and list(rep0.groups.h) == [1e-4, 1e-3]
    for _ in range(4):
        opt.zero_grad(); bert(**batch).loss.backward(); opt.step()
    rep = implicit_bias_report(bert, None, batch, optimizer=opt)
    assert rep.n == 4 and rep.c_n == pytest.approx(memory_coefficients(0.9, 4) - memory_coefficients(0.99, 4))
    assert rep.groups.loc[1, 'h_c_n'] == pytest.approx(10 * rep.groups.loc[0, 'h_c_n'])
    assert read_optimizer(opt)[0].steps == (4,) * len(list(bert.bert.parameters()))
    with pytest.raises(ValueError, match="not both"): implicit_bias_report(bert, None, batch, optimizer=opt, h=1e-3)


def test_torch_adamw_is_read_with_eps_outside_and_its_weight_decay_per_group():
    "A Hugging Face fine-tune's AdamW (no decay on biases and LayerNorm): SPEC §3c's field with ε outside and λ per group."
    bert, batch = tiny_bert(dropout=0.0).eval(), text_batch()
    no_decay = lambda k: k.endswith('bias') or 'LayerNorm' in k
    adamw = torch.optim.AdamW([{'params': [p for k, p in bert.named_parameters() if not no_decay(k)], 'weight_decay': 0.01},
                               {'params': [p for k, p in bert.named_parameters() if no_decay(k)], 'weight_decay': 0.0}], lr=1e-3)
    for _ in range(2):
        adamw.zero_grad(); bert(**batch).loss.backward(); adamw.step()
    rep = implicit_bias_report(bert, None, batch, optimizer=adamw)
    assert rep.n == 2 and list(rep.groups.weight_decay) == [0.01, 0.0] and not rep.groups.eps_inside.any()
    assert 'ε outside' in rep.regime.penalized
    from adam_implicit_bias.fields import first_order_field, gradient, second_order_field
    ml = model_loss(bert, None, batch)
    lam = torch.cat([torch.full((p.numel(),), 0.0 if no_decay(k) else 0.01) for k, p in zip(ml.names, ml.params)])
    kw = dict(eps=1e-8, eps_inside=False, weight_decay=lam)
    f, f2 = first_order_field(ml.loss, ml.theta, **kw), second_order_field(ml.loss, ml.theta, h=1e-3, beta=0.9, rho=0.999, n=2, **kw)
    live = gradient(ml.loss, ml.theta) != 0
    assert rep.correction_relative == pytest.approx(((f2 - f)[live].norm() / f[live].norm()).item(), rel=1e-4)
    l2 = implicit_bias_report(bert, None, batch, optimizer=torch.optim.Adam(bert.parameters(), weight_decay=0.1))   # torch's L2
    assert l2.loss == pytest.approx(rep.loss + 0.05 * ml.theta.double().pow(2).sum().item(), rel=1e-6)


def test_clear_errors():
    bert, batch = tiny_bert(dropout=0.0).eval(), text_batch()
    mlp, xy = nn.Sequential(nn.Linear(4, 3)), (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    report = lambda model, loss_fn, batch, **kw: implicit_bias_report(model, loss_fn, batch, **HYPER, **kw)
    with pytest.raises(TypeError, match="must take two arguments"): report(mlp, lambda out: out.sum(), xy)
    with pytest.raises(TypeError, match="is a model"): report(mlp, mlp, xy)
    with pytest.raises(ValueError, match="reduction='none'"): report(mlp, lambda o, t: F.cross_entropy(o, t, reduction='none'), xy)
    with pytest.raises(TypeError, match=r"\.item\(\)"): report(mlp, lambda o, t: F.cross_entropy(o, t).item(), xy)
    with pytest.raises(TypeError, match="return its .loss"): report(bert, lambda model, batch: model(**batch), batch)
    with pytest.raises(TypeError, match="must be a pair"): report(bert, F.cross_entropy, batch)
    with pytest.raises(ValueError, match="has none"): report(bert, None, {k: v for k, v in batch.items() if k != 'labels'})
    with pytest.raises(ValueError, match="no trainable parameters"): report(copy.deepcopy(mlp).requires_grad_(False), F.cross_entropy, xy)
    with pytest.raises(TypeError, match="re-iterable"): implicit_bias_report(mlp, F.cross_entropy, data=iter([xy]), **HYPER)
    def under_inference_mode(o, t):
        with torch.inference_mode(): return F.cross_entropy(o, t)
    with pytest.raises(RuntimeError, match="inference_mode"): report(mlp, under_inference_mode, xy)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"): report(mlp, F.cross_entropy, xy)
    with pytest.raises(TypeError, match="got torch.optim.sgd.SGD"):
        implicit_bias_report(mlp, F.cross_entropy, xy, optimizer=torch.optim.SGD(mlp.parameters(), lr=0.1))
