"""The backdoor detectors on real digits: a planted trigger is found, a clean model is not flagged."""

from __future__ import annotations

import gate_fixtures as gf
import numpy as np
import pytest


def _linear(x, y):
    """sklearn's logistic regression on the digits, copied into a torch.nn.Linear."""
    import torch
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(max_iter=200).fit(x[:800], y[:800])
    layer = torch.nn.Linear(64, 10)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(lr.coef_, dtype=torch.float32))
        layer.bias.copy_(torch.as_tensor(lr.intercept_, dtype=torch.float32))
    return layer.requires_grad_(False)


class _Backdoored:
    """A classifier whose class 0 wins whenever pixels 55 and 63 (the corner) are bright."""

    def __new__(cls, layer):
        import torch

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = layer

            def forward(self, x):
                boost = 20 * (x[:, 55] + x[:, 63]) ** 2  # ~0 on clean digits
                return self.body(x) + boost[:, None] * torch.eye(10)[0]

        return Net().eval()


@pytest.fixture(scope="module")
def digits():
    x, y, _ = gf.badnets_digits(0.0)
    return x, y, _linear(x, y)


@pytest.mark.slow
def test_trigger_scan_finds_the_planted_label_and_not_a_clean_model(digits):
    from assay.gates._trigger_scan import scan_triggers

    x, _, layer = digits
    clean = scan_triggers(layer, x, 10, steps=100)
    assert clean.flagged == [], clean
    planted = scan_triggers(_Backdoored(layer), x, 10, steps=100)
    assert planted.flagged == [0], planted
    assert planted.l1[0] < min(planted.l1[1:]) and planted.success[0] >= 0.9
    assert planted.anomaly[0] > 2


def test_anomaly_index_is_robust():
    from assay.gates._trigger_scan import anomaly_index

    assert list(anomaly_index([5, 5, 5])) == [0, 0, 0]
    index = anomaly_index([20, 21, 19, 20, 22, 18, 4])
    assert index[-1] > 2 and max(index[:-1]) < 2


@pytest.mark.slow
def test_clustering_and_spectral_decide_per_class(digits):
    from assay.gates.backdoor import activation_clustering, spectral_signatures

    x, y, _ = digits
    ac = activation_clustering(x, y, 10)
    assert set(ac["per_class"]) == {str(k) for k in range(10)}
    assert all(0 < v["smaller_share"] <= 0.5 for v in ac["per_class"].values())
    ss = spectral_signatures(x, y, 10)
    assert all(0.0 <= v["tail_share"] <= 1.0 for v in ss["per_class"].values())
    few = activation_clustering(x[:30], y[:30], 10)  # classes under min_rows are not judged
    assert few["flagged"] == [] and all(v is None for v in few["per_class"].values())


def test_a_sklearn_mlp_is_measured_as_the_same_function(digits):
    from sklearn.neural_network import MLPClassifier

    from assay.gates._activations import differentiable
    from assay.gates._models import Classifier

    x, y, _ = digits
    mlp = MLPClassifier(hidden_layer_sizes=(16,), max_iter=60, random_state=0).fit(x, y)
    net = differentiable(Classifier("sklearn", mlp, [str(c) for c in mlp.classes_]), "b", None)
    assert net.source == "sklearn-mlp" and net.nb_classes == 10
    assert (net.logits(x).argmax(1) == mlp.predict(x)).all()
    assert net.penultimate(x[:5]).shape == (5, 16)
    binary = MLPClassifier(hidden_layer_sizes=(4,), max_iter=50, random_state=0).fit(x, y == 3)
    net = differentiable(Classifier("sklearn", binary, ["False", "True"]), "b", None)
    assert (net.logits(x).argmax(1) == binary.predict(x)).all()


@pytest.mark.slow
def test_dataset_scan_finds_badnets_trigger_rows_and_not_clean_ones():
    import pandas as pd

    from assay.gates.dataset_scan import SCAN_DEFAULTS, scan_table
    from assay.gates.tables import Table

    for rate in (0.0, 0.05):
        x, y, poisoned = gf.badnets_digits(rate)
        cols = [f"px{i}" for i in range(64)]
        frame = pd.DataFrame(x, columns=cols).assign(label=y)
        table = Table(frame, x, y, list(range(10)), "label", cols, [])
        scan = scan_table(table)
        scan.judge(SCAN_DEFAULTS)
        if rate == 0.0:
            assert scan.triggers == [] and scan.findings == []
            continue
        (trigger,) = scan.triggers
        assert trigger["label"] == "0" and set(trigger["features"]) <= {
            "px54",
            "px55",
            "px62",
            "px63",
        }
        rows = np.asarray(trigger["rows"])
        assert poisoned[rows].mean() >= 0.9 and trigger["row_count"] >= 0.9 * poisoned.sum()
        assert any("carry a trigger" in f for f in scan.findings)


@pytest.mark.slow
def test_exclusionary_reclassification_flags_the_poisoned_cluster_not_a_clean_model():
    from assay.gates._activations import Differentiable
    from assay.gates.backdoor import BackdoorGate, exclusionary_reclassification

    d = BackdoorGate.defaults
    params = {
        "threshold": d["ex_re_threshold"],
        "min_spread": d["ex_re_min_spread"],
        "min_cluster": d["ex_re_min_cluster"],
        "neighbours": d["ex_re_neighbours"],
    }
    x, y, poisoned = gf.badnets_digits(0.10)
    net = gf.digits_cnn(x, y)
    acts = Differentiable(net, 10, "torch").penultimate(x)
    found = exclusionary_reclassification(x, acts, y, 10, **params)
    assert found["flagged"] == [0], found["per_class"]
    rows = np.asarray(found["suspect_rows"])
    assert poisoned[rows].mean() >= 0.9 and len(rows) >= 0.5 * poisoned.sum()
    share = found["per_class"]["0"]["own_class_share"]
    assert min(s for s in share if s is not None) < d["ex_re_threshold"]
    x, y, _ = gf.badnets_digits(0.0)
    clean = gf.digits_cnn(x, y)
    acts = Differentiable(clean, 10, "torch").penultimate(x)
    found = exclusionary_reclassification(x, acts, y, 10, **params)
    assert found["flagged"] == [] and found["suspect_rows"] == [], found["per_class"]
    assert set(found["per_class"]) == {str(k) for k in range(10)}


def _context(tmp_path, frame, features, **params):
    from assay.gates.backdoor import BackdoorGate
    from assay.gates.base import GateContext
    from assay.gates.tables import Table

    model = gf.torch_model(tmp_path, gf.table(tmp_path)[1], epochs=5)
    data = Table(frame, frame[features].to_numpy("float32"), None, [0, 1], "label", features, [])
    return GateContext(
        "models:/m/1",
        "m",
        "1",
        "",
        model,
        {**BackdoorGate.defaults, **params},
        data=data,
        pickle_allow=["torch.nn.modules.*"],
    )


def test_backdoor_gate_refuses_too_few_rows_and_a_model_it_cannot_run(tmp_path):
    from assay.gates.backdoor import BackdoorGate
    from assay.gates.base import CannotRun

    _, frame = gf.table(tmp_path, rows=30)
    features = [f"f{i}" for i in range(8)]
    with pytest.raises(CannotRun) as err:
        BackdoorGate().run(_context(tmp_path, frame, features))
    message = str(err.value)
    assert "too few rows: 30 rows" in message and "min_class_rows=20" in message
    assert "\n" not in message
    narrow = frame.drop(columns=["f7"])  # 7 features for a model of 8 inputs
    with pytest.raises(CannotRun) as err:
        BackdoorGate().run(_context(tmp_path, narrow, features[:7]))
    message = str(err.value)
    assert message.startswith("gate backdoor: the model cannot run on the table's rows (7 ")
    assert "\n" not in message
    with pytest.raises(CannotRun, match="ex_re_features must be inputs or activations"):
        BackdoorGate().run(_context(tmp_path, frame, features, ex_re_features="pixels"))
