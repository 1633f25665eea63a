"""Thread scaling (1 vs 2 threads, medium and large) and time per step against T (medium).

    python benches/scaling.py
"""
import numpy as np, fastrnn, time
def tm(f,n=7):
    f(); ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return np.median(ts)
rng=np.random.default_rng(0)
for name,(V,H,B,T) in {"medium":(28,256,64,64),"large":(96,1024,64,64)}.items():
    p=fastrnn.init_params(V,H,dtype="float32",seed=0,init="uniform")
    X=rng.integers(0,V,(B,T)); Y=rng.integers(0,V,(B,T))
    t1=tm(lambda: fastrnn.loss_and_grad(p,X,Y,num_threads=1), 5 if name=="large" else 15)
    t2=tm(lambda: fastrnn.loss_and_grad(p,X,Y,num_threads=2), 5 if name=="large" else 15)
    print(f"{name}: 1 thread {t1*1e3:.1f} ms, 2 threads {t2*1e3:.1f} ms, speedup {t1/t2:.2f}x")
V,H,B=28,256,64
p=fastrnn.init_params(V,H,dtype="float32",seed=0,init="uniform")
for T in (16,32,64,128,256):
    X=rng.integers(0,V,(B,T))
    t=tm(lambda: fastrnn.loss_and_grad(p,X,X,num_threads=2), 9)
    print(f"medium T={T}: {t*1e3:.2f} ms, {t/T*1e6:.1f} us per step")
