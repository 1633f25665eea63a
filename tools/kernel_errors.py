"""Largest kernel-vs-reference errors over the test matrix (the figures in the README/notes).

    python tools/kernel_errors.py

Every output of fastrnn.forward / loss_and_grad against the float64 NumPy reference,
as max |error| / max |reference| per tensor, over the shapes of tests/test_kernels.py,
float64 and float32, tanh and relu, token ids and dense inputs, 1, 2, 3 and 8 threads.
"""
import numpy as np, fastrnn, sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_problem
from fastrnn import reference, _rnn
_rnn.set_min_flops_per_thread(0)
SHAPES=[(5,7,11,9,13),(1,6,5,4,5),(4,1,5,4,5),(3,5,5,1,5),(3,5,1,4,5),(3,5,5,4,1),(17,9,28,32,28)]
worst={}
rng=np.random.default_rng(0)
for dt in (np.float64, np.float32):
  for sh in SHAPES:
    for nl in ("tanh","relu"):
      for dense in (False,True):
        for nt in (1,2,3,8):
          B,T,D,H,V=sh
          p,p64,X,Y,h0=make_problem(rng,B,T,D,H,V,dtype=dt,dense=dense)
          lg,hT=fastrnn.forward(p,X,h0,nonlinearity=nl,num_threads=nt)
          rl,rh=reference.forward(p64,X,h0,nonlinearity=nl)
          l,g,h2=fastrnn.loss_and_grad(p,X,Y,h0,nonlinearity=nl,num_threads=nt)
          L,G,H2=reference.loss_and_grad(p64,X,Y,h0,nonlinearity=nl)
          e={"logits":np.abs(lg-rl).max()/max(np.abs(rl).max(),1e-300),"h_T":np.abs(h2-H2).max()/max(np.abs(H2).max(),1e-300),"loss":abs(l-L)/max(abs(L),1e-300)}
          for k in G: e[k]=np.abs(g[k]-G[k]).max()/max(np.abs(G[k]).max(),1e-30)
          for k,v in e.items():
            key=(np.dtype(dt).name,k); worst[key]=max(worst.get(key,0),v)
for dt in ("float64","float32"):
    print(dt, ", ".join(f"{k} {worst[(dt,k)]:.1e}" for k in ["logits","loss","h_T","W_xh","W_hh","b_h","W_hq","b_q","h0"]))
