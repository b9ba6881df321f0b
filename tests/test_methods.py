"""--method centralized | isolated | gala and diffusion's faults: --link-drop, --max-staleness, --fail-learner."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

from diffdac import TrainConfig, train
from diffdac.run import checkpoint
from diffdac.learners.a2c import a2c_loss, compute_returns
from diffdac.network.comm import LocalCommunicator
from diffdac.errors import ConfigError
from diffdac.learners.block import Learners
from diffdac.network.methods import method_for
from diffdac.learners.population import Population
from diffdac.run.prepare import make_tasks, prepare
from topologies import exponential_reads

SMALL = dict(num_learners=4, envs_per_learner=2, hidden=16, total_steps=4000, log_interval=1000, progress=False)


def _train(root: Path, name: str, **overrides) -> Path:
    return train(TrainConfig(**{**SMALL, "log_dir": str(root / name), **overrides}))


def _episodes(run_dir: Path) -> list[pd.DataFrame]:
    return [pd.read_csv(p, skiprows=1)[["r", "l"]] for p in sorted((run_dir / "monitor").glob("*.monitor.csv"))]


def _same_run(a: Path, b: Path) -> bool:
    same_params = torch.equal(checkpoint.gather(a), checkpoint.gather(b))
    return same_params and all(x.equals(y) for x, y in zip(_episodes(a), _episodes(b), strict=True))


# ---------------------------------------------------------------- centralized


def test_centralized_keeps_one_parameter_set(tmp_path):
    run_dir = _train(tmp_path, "c", method="centralized", separate_init=True, normalize=("obs", "reward"))
    params = checkpoint.gather(run_dir)
    assert torch.equal(params, params[:1].expand_as(params))
    assert (pd.read_csv(run_dir / "progress.csv")["disagreement"] == 0).all()


def test_centralized_equals_one_learner_on_the_concatenated_batch():
    prepared = prepare(TrainConfig(**{**SMALL, "num_learners": 3, "method": "centralized", "gae_lambda": 0.9}))
    config, ids = prepared.config, np.arange(3)
    learners = Learners(config, prepared.method, LocalCommunicator(), make_tasks(config, ids), ids)
    start = learners.pop.flat.detach()[0].clone()
    learners.collect(lambda *episodes: None)
    learners.adapt()

    # the same update by hand: one model, one loss over all learners' samples
    ro, cfg = learners.rollout, config
    one = Population(learners.tasks.observation_space, learners.tasks.action_space, np.arange(1), cfg.hidden)
    with torch.no_grad():
        one.flat.copy_(start[None])
    k, steps, sims, dim = ro.obs.shape
    values = torch.stack([one.value(ro.obs[i].reshape(1, -1, dim))[0] for i in range(k)])  # [K, T*E]
    with torch.no_grad():
        next_value = one.value(learners.obs.reshape(1, -1, dim)).view(k, sims)
    advantages, returns = compute_returns(
        ro.rewards, values.detach().view(k, steps, sims), ro.dones, next_value, cfg.gamma, cfg.gae_lambda
    )
    logp, entropy = one.evaluate(ro.obs.reshape(1, -1, dim), ro.actions.reshape(1, -1))
    loss = a2c_loss(
        logp,
        entropy,
        values.reshape(1, -1),
        returns.reshape(1, -1),
        advantages.reshape(1, -1),
        cfg.value_coef,
        cfg.entropy_coef,
    )
    loss.total.sum().backward()
    torch.nn.utils.clip_grad_norm_([one.flat], cfg.max_grad_norm)  # one model: its one row clipped
    torch.optim.RMSprop([one.flat], lr=cfg.lr, alpha=cfg.rms_alpha, eps=cfg.rms_eps).step()
    after = learners.pop.flat.detach()
    assert not torch.equal(after[0], start)
    for row in after:
        torch.testing.assert_close(row, one.flat.detach()[0], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- isolated


def test_isolated_learners_never_change_one_another(tmp_path):
    isolated = _train(tmp_path, "i", method="isolated")
    alone = _train(tmp_path, "one", num_learners=1, total_steps=1000, method="isolated")
    assert torch.equal(checkpoint.gather(isolated)[0], checkpoint.gather(alone)[0])
    assert _same_run(isolated, _train(tmp_path, "none", topology="none"))


# ---------------------------------------------------------------- gala


def _mix(mixer, rounds: int, start: torch.Tensor) -> torch.Tensor:
    z = start
    for r in range(rounds):
        z = mixer.combine(r, np.ones(len(z), dtype=bool), [z])[0]
    return z


@pytest.mark.parametrize("n, peers, rounds, tol", [(8, 1, 3, 1e-12), (6, 1, 80, 1e-9), (13, 2, 80, 1e-9)])
def test_push_sum_reaches_the_exact_average(n, peers, rounds, tol):
    config = TrainConfig(num_learners=n, method="gala", peers_per_round=peers)
    mixer = method_for(config, nx.empty_graph(n)).mixer(LocalCommunicator(), np.arange(n), torch.device("cpu"))
    start = torch.randn(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    z = _mix(mixer, rounds, start)
    torch.testing.assert_close(z, start.mean(0, keepdim=True).expand_as(z), rtol=0, atol=tol)
    assert abs(float(mixer.weight.sum()) - n) < 1e-9  # push-sum conserves the total weight


def test_gala_pushes_to_one_peer_per_round_on_the_exponential_graph():
    assert [exponential_reads(8, r, 1)[1][:2].tolist() for r in range(4)] == [[1, 2], [2, 3], [4, 5], [1, 2]]
    src, dst = exponential_reads(8, 0, 2)
    assert len(src) == 16 and sorted(dst[src == 0].tolist()) == [1, 2]


def test_gala_at_learning_rate_zero_averages_the_initial_parameters(tmp_path):
    run_dir = _train(
        tmp_path, "g", method="gala", lr=0.0, separate_init=True, num_learners=8, envs_per_learner=1, total_steps=2000
    )
    tasks = make_tasks(TrainConfig(num_learners=8, envs_per_learner=1), np.arange(8))
    start = Population(tasks.observation_space, tasks.action_space, np.arange(8), 16, 0, True).flat.detach()
    final = checkpoint.gather(run_dir)
    torch.testing.assert_close(final, start.mean(0, keepdim=True).expand_as(final), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- faults of diffusion


def test_link_drop_one_is_isolation(tmp_path):
    assert _same_run(_train(tmp_path, "p1", link_drop=1.0), _train(tmp_path, "iso", method="isolated"))


def test_the_fault_path_with_nothing_failing_is_plain_diffusion(tmp_path):
    # a failure after the end puts every round through the re-weighting path with all links working
    faulty = _train(tmp_path, "f", fail_learner=("1@999999",), weights="metropolis", topology="full")
    assert _same_run(faulty, _train(tmp_path, "plain", weights="metropolis", topology="full"))
    assert _same_run(_train(tmp_path, "p0", link_drop=0.0, max_staleness=0), _train(tmp_path, "d"))


def test_link_drops_reweight_over_the_links_that_work(tmp_path):
    config = TrainConfig(num_learners=6, topology="full", link_drop=0.5, weights="metropolis")
    mixer = method_for(config, nx.complete_graph(6)).mixer(LocalCommunicator(), np.arange(6), torch.device("cpu"))
    counts = []
    for r in range(20):
        mixer.history.appendleft([torch.zeros(6, 1)])
        c = mixer._round_matrix(r, np.ones(6, dtype=bool)).to_dense()
        torch.testing.assert_close(c.sum(1), torch.ones(6, dtype=torch.float64))  # rows: weights sum to 1
        torch.testing.assert_close(c, c.T)  # metropolis stays symmetric, both directions fail together
        counts.append(mixer.links)
    assert 0 < min(counts) and max(counts) < 15 and abs(np.mean(counts) - 7.5) < 2.5


def test_staleness_reads_neighbours_at_most_s_rounds_old():
    s = 2
    config = TrainConfig(num_learners=5, topology="ring", max_staleness=s)
    mixer = method_for(config, nx.cycle_graph(5)).mixer(LocalCommunicator(), np.arange(5), torch.device("cpu"))
    delays = set()
    for r in range(30):
        # buffer of round r holds the value r for every learner: the result shows which round was read
        out = mixer.combine(r, np.ones(5, dtype=bool), [torch.full((5, 1), float(r), dtype=torch.float64)])[0]
        age = r - out  # own row is fresh, so this is a weighted mean of neighbour ages
        assert (age >= 0).all() and (age <= s).all()
        c = mixer._round_matrix(r, np.ones(5, dtype=bool)).to_dense().reshape(5, -1, 5)
        delays |= {int(d) for d in torch.nonzero(c)[:, 1]}
    assert delays == set(range(s + 1))


def test_a_failed_learner_stops_leaves_the_graph_and_progress_says_when(tmp_path, capsys):
    run_dir = _train(
        tmp_path,
        "fail",
        fail_learner=("2@2000",),
        topology="full",
        save_every=2000,
        keep_checkpoints=5,
        log_interval=400,
    )
    assert "learner 2 left the graph at step 2000" in capsys.readouterr().out
    at_failure = checkpoint.gather(run_dir, manifest=checkpoint.resolve(run_dir, "2000"))
    final = checkpoint.gather(run_dir)
    assert torch.equal(final[2], at_failure[2]) and not torch.equal(final[0], at_failure[0])
    torch.testing.assert_close(final[0], final[1])  # the others still reach consensus among themselves
    monitor = pd.read_csv(run_dir / "monitor" / "learner002.sim00.monitor.csv", skiprows=1)
    assert monitor["l"].sum() <= 2000 // 8
    progress = pd.read_csv(run_dir / "progress.csv")
    assert progress.loc[progress["steps"] <= 2000, "learners"].eq(4).all()
    assert progress.loc[progress["steps"] > 2000, "learners"].eq(3).all()
    assert progress.loc[progress["steps"] > 2000, "links"].eq(3).all()  # full graph on 3 learners


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (dict(method="star"), "unknown --method 'star'"),
        (dict(link_drop=1.5), "--link-drop is a probability"),
        (dict(max_staleness=-1), "--max-staleness"),
        (dict(fail_learner=("9@10",)), "--fail-learner 9@10"),
        (dict(fail_learner=("x",)), "LEARNER@STEP"),
        (dict(method="gala", link_drop=0.1), "use it with --method diff-a2c"),
        (dict(method="gala", peers_per_round=5), "--peers-per-round 5"),
    ],
)
def test_bad_method_options_are_refused(overrides, expected):
    with pytest.raises(ConfigError, match=None) as err:
        TrainConfig(**{**SMALL, **overrides}).validate()
    assert expected in str(err.value)
