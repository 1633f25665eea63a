"""Peak memory of one large training step (V=96 H=1024 B=64 T=64, float32) against
parameters + gradients + activations, above the interpreter's baseline.

    python benches/peak_memory.py
"""
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
