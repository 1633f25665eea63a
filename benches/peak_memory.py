"""Peak memory of one large training step (V=96 H=1024 B=64 T=64, float32) against
parameters + gradients + activations, above the interpreter's baseline.

    python benches/peak_memory.py

The gated configurations run first, each in a fresh process: Linux keeps a process's
peak RSS (ru_maxrss) across fork and exec, so a child started after the Elman step
below would begin with that step's peak as its "baseline" and report too little (it
did: 0 KiB above the baseline for lstm-medium).
"""
# Gated cells (issue 12): peak RSS of one training step, measured in a fresh process per
# cell, against params + grads + the activations the cell must keep for backward:
# per layer h_t (T*B*H), LSTM's c_t (T*B*H) and the gate cache (T*B*gate_cache_width),
# plus the logits (T*B*V).
import subprocess, sys  # noqa: E401,E402
GATED_SCRIPT = r"""
import resource, sys, numpy as np, fastrnn
from fastrnn import _layers
cell, V, H, L, B, T = sys.argv[1], *map(int, sys.argv[2:7])
rng = np.random.default_rng(0); X = rng.integers(0, V, (B, T)); Y = rng.integers(0, V, (B, T))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
p = fastrnn.init_params(V, H, cell=cell, num_layers=L, dtype="float32", seed=0)
fastrnn.loss_and_grad(p, X, Y, cell=cell, num_threads=2)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
P = sum(v.size for v in p.values())
cid = {"gru": _layers.CELL_GRU, "lstm": _layers.CELL_LSTM}[cell]
keep = L * T * B * (H * (2 if cell == "lstm" else 1) + _layers.gate_cache_width(cid, H))
model = (2 * P + keep + T * B * V) * 4 / 1024
print(f"{cell} V={V} H={H} L={L} B={B} T={T}: peak RSS above the baseline {peak - base} KiB;"
      f" params+grads+activations {model:.0f} KiB; ratio {(peak - base) / model:.2f}")
"""
for cfg in [("lstm", 65, 256, 1, 64, 64), ("gru", 65, 256, 1, 64, 64),
            ("lstm", 65, 1024, 1, 64, 64), ("lstm", 65, 512, 2, 50, 50)]:
    subprocess.run([sys.executable, "-c", GATED_SCRIPT, *map(str, cfg)], check=True)

def elman():
    import resource, numpy as np, fastrnn
    V,H,B,T=96,1024,64,64
    rng=np.random.default_rng(0); X=rng.integers(0,V,(B,T))
    base=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # interpreter + numpy + fastrnn imported
    p=fastrnn.init_params(V,H,dtype="float32",seed=0,init="uniform")
    fastrnn.loss_and_grad(p,X,X,num_threads=2)
    peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    P=sum(v.size for v in p.values())
    model=(P*2 + T*B*(H+V))*4/1024   # params + grads + activations T*B*(H+V), KiB (SGD: no optimizer state)
    print(f"peak RSS above the baseline: {peak-base} KiB; params+grads+activations: {model:.0f} KiB; ratio {(peak-base)/model:.2f}")


elman()
