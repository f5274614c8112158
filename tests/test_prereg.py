"The pre-registration of the cpu confirmation (issue 21) is what the code runs and judges: configurations, run hashes, primaries."
import json
from pathlib import Path

import pytest

from adam_implicit_bias import cifar as C
from adam_implicit_bias.figure7 import lockstep_configs, theory_configs
from adam_implicit_bias.scales import scale_config
from adam_implicit_bias.stats import holm_reachable
from adam_implicit_bias.train import config_hash

REG = json.loads((Path(__file__).parent.parent/'nbs'/'data'/'preregistration.json').read_text())


def test_the_registered_configurations_are_the_cpu_scale():
    assert REG['configurations']['cifar'] == json.loads(json.dumps(scale_config('cifar', 'cpu')))
    assert REG['configurations']['penalty_cifar'] == json.loads(json.dumps(scale_config('penalty', 'cpu')['cifar']))


def test_the_registered_runs_keep_their_hashes():
    "Once the confirmation runs started, their config hashes must not change (no trainer version bump, no new field)."
    got = {C.sweep_key(s) + f" [{s['model']}, {f}]": [config_hash(c) for c in C.sweep_configs(s, 'cpu')] for f, s in C.sweep_specs('cpu')}
    assert got == REG['configurations']['sweep_run_hashes']
    assert {k: [config_hash(c) for c in cs] for k, cs in theory_configs('cpu').items()} == REG['configurations']['theory_run_hashes']
    lock = {m: [{k: config_hash(c) for k, c in arms.items()} for arms in lockstep_configs('cpu', m)]
            for m in scale_config('penalty', 'cpu')['cifar']['lockstep']['models']}
    assert lock == REG['configurations']['lockstep_run_hashes']


@pytest.mark.parametrize('fig', ['fig4', 'fig5', 'fig6'])
@pytest.mark.parametrize('scale', ['ci', 'cpu'])
def test_the_figures_judge_exactly_the_registered_primaries(fig, scale):
    specs = [s for f, s in C.sweep_specs(scale) if f == fig]
    prim, alpha, source = C.primaries_for(REG, fig, specs)
    assert source == 'registered' and alpha == REG['statistics']['alpha'] == 0.05
    assert prim == REG['figures'][fig]['primaries'] == C.primaries_by_rule(specs)


@pytest.mark.parametrize('fig', ['fig4', 'fig5', 'fig6', 'fig7'])
def test_every_family_can_pass_holm_at_the_registered_seeds(fig):
    f = REG['figures'][fig]
    assert holm_reachable(f['seeds'], f['k'], f['alpha']) and f['k'] == len(f['primaries'])


def test_confirmation_data_and_seeds_are_fresh():
    "The search (exploration) ran on data_seed 0 with seeds 0-4; the confirmation uses neither."
    assert REG['data']['data_seed'] != 0 and REG['data']['seeds_first'] >= 5
    seeds = {c.seed for _, s in C.sweep_specs('cpu') for c in C.sweep_configs(s, 'cpu')}
    assert seeds.isdisjoint(range(5)) and {c.data_seed for _, s in C.sweep_specs('cpu') for c in C.sweep_configs(s, 'cpu')} == {1}
