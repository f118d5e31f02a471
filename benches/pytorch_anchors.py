# PyTorch CPU anchors for `vqgrad bench`'s figures: cdist + argmin GFLOP/s at the bench's assign shapes, and
# docs/PROTOCOL.md's E1 training (B = 256, d = 256, m = 4, K = 32, linear encoder and decoder, Adam at 1e-3) in steps/s
# per estimator, with PyTorch's 2 threads. Not part of the tests or CI: run it by hand in a scratch environment,
#   python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch && /tmp/torchenv/bin/python benches/pytorch_anchors.py
import time, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(2)
torch.manual_seed(0)

def med(xs):
    xs = sorted(xs); n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])

def assign_gflops(n, k, m, reps=5):
    z, c = torch.randn(n, m), torch.randn(k, m)
    torch.cdist(z, c).argmin(1)
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); torch.cdist(z, c).argmin(1); ts.append(time.perf_counter() - t)
    return 2 * n * k * m / med(ts) / 1e9

class Rotation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, q):
        ctx.save_for_backward(z, q); return q.clone()
    @staticmethod
    def backward(ctx, g):
        z, q = ctx.saved_tensors
        v = q - z; u = v / (v.norm(dim=-1, keepdim=True) + 1e-8)
        return (g * u).sum(-1, keepdim=True) * u, None

def rotation_trick(z, q):
    zn, qn = F.normalize(z, dim=-1), F.normalize(q, dim=-1)
    w = F.normalize(zn + qn, dim=-1).detach()
    lam = (q.norm(dim=-1, keepdim=True) / z.norm(dim=-1, keepdim=True).clamp_min(1e-8)).detach()
    zr = z - 2 * (z * w).sum(-1, keepdim=True) * w + 2 * (z * zn.detach()).sum(-1, keepdim=True) * qn.detach()
    return lam * zr

def train_steps_per_sec(estimator, k=32, b=256, d=256, m=4, beta=0.25, steps=300, warmup=30, rounds=3):
    x_all = torch.randn(16384, d)
    enc, dec = nn.Linear(d, m), nn.Linear(m, d)
    cb = nn.Parameter(torch.randn(k, m))
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()) + [cb], lr=1e-3)
    def step():
        x = x_all[torch.randint(0, x_all.shape[0], (b,))]
        z = enc(x)
        idx = torch.cdist(z.detach(), cb.detach()).argmin(1)
        q = cb[idx]
        if estimator == "ste": qt = z + (q - z).detach()
        elif estimator == "rotation": qt = Rotation.apply(z, q.detach())
        else: qt = rotation_trick(z, q.detach())
        xh = dec(qt)
        loss = F.mse_loss(xh, x) + F.mse_loss(q, z.detach()) + beta * F.mse_loss(z, q.detach())
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    for _ in range(warmup): step()
    per_round = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(steps): step()
        per_round.append(steps / (time.perf_counter() - t))
    return med(per_round)

def sweep_run_steps_per_sec(estimators=("ste", "rotation", "rotation-trick", "diveq"), seeds=5, steps=256):
    """The E1 sweep one run at a time, model setup included: run-steps per second."""
    t = time.perf_counter()
    for est in estimators:
        for seed in range(seeds):
            torch.manual_seed(seed)
            # diveq has no PyTorch loop here; its step costs what ste's does (one more elementwise op).
            train_steps_per_sec("ste" if est == "diveq" else est, steps=steps, warmup=0, rounds=1)
    return len(estimators) * seeds * steps / (time.perf_counter() - t)

if __name__ == "__main__":
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for shape in [(65536, 512, 64), (16384, 1024, 256), (65536, 1024, 8)]:
        print(f"assign N={shape[0]} K={shape[1]} m={shape[2]}: {assign_gflops(*shape):.1f} GFLOP/s")
    base = None
    for est in ["ste", "rotation", "rotation-trick"]:
        sps = train_steps_per_sec(est)
        base = base or sps
        print(f"E1 {est}: {sps:.0f} steps/s (step time / ste's {base / sps:.3f})")
    print(f"E1 K=64 ste: {train_steps_per_sec('ste', k=64):.0f} steps/s")
    print(f"E1 sweep (4 estimators x 5 seeds x 256 steps, one run at a time): {sweep_run_steps_per_sec():.0f} run-steps/s")
