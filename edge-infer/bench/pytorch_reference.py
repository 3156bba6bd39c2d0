# The PyTorch side of `edge-infer bench`'s comparison (README, "Edge"): EM-PF inference of the
# bench network's shapes in eager PyTorch, as a careful PyTorch user would write it (SpikingJelly
# style multi-step: the time-invariant stem once, every stateless layer batched over T*N, only
# the neuron unrolled over T). Weights are random: the work does not depend on their values.
# Not part of the test suite; needs `pip install torch` in a virtual environment:
#   python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch && /tmp/tv/bin/python edge-infer/bench/pytorch_reference.py
# PyTorch EM-PF inference of the bench network (1x28x28 -> conv 32 -> bconv 64 -> pool -> bconv 128
# -> pool -> bconv 128 -> GAP -> linear 10, T = 4), batch 64, float32, BN folded, binary weights
# as alpha*sign(W) float convs, stateless layers batched over T*N, the neuron unrolled over T.
import time, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(2)
T, N = 4, 64
def sign_conv(cin, cout):
    w = torch.randn(cout, cin, 3, 3)
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    return (alpha * w.sign()).contiguous(), torch.randn(cout) * 0.1
conv0_w, conv0_b = torch.randn(32, 1, 3, 3) * 0.3, torch.zeros(32)
layers = [sign_conv(32, 64), sign_conv(64, 128), sign_conv(128, 128)]
lin_w, lin_b = torch.randn(10, 128) * 0.1, torch.zeros(10)
lam = [torch.rand(T) for _ in range(4)]
theta = [torch.rand(T) * 0.5 + 0.5 for _ in range(4)]
def neuron(cur, k):  # cur: [T, N, ...] (or [N, ...] time-invariant)
    v = torch.zeros_like(cur[0] if cur.dim() == 5 else cur)
    out = []
    for t in range(T):
        i = cur[t] if cur.dim() == 5 else cur
        m = lam[k][t] * v + i
        s = F.relu(m - theta[k][t])
        v = m - s
        out.append(s)
    return torch.stack(out)  # [T, N, C, H, W]
def forward(x):
    cur = F.conv2d(x, conv0_w, conv0_b, padding=1)   # time-invariant: once
    s = neuron(cur, 0)
    for li, (w, b) in enumerate(layers):
        tn = s.reshape(T * N, *s.shape[2:])
        c = F.conv2d(tn, w, b, padding=1)
        s = neuron(c.reshape(T, N, *c.shape[1:]), li + 1)
        if li < 2:
            p = F.avg_pool2d(s.reshape(T * N, *s.shape[2:]), 2)
            s = p.reshape(T, N, *p.shape[1:])
    g = s.mean(dim=(3, 4))                       # [T, N, 128]
    return F.linear(g, lin_w, lin_b).mean(0)     # [N, 10]
x = torch.rand(N, 1, 28, 28)
with torch.inference_mode():
    for _ in range(3):
        forward(x)
    for rnd in range(3):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 4.0:
            forward(x); n += N
        print(f"pytorch {torch.__version__} eager, 2 threads: {n / (time.perf_counter() - t0):.1f} images/s (batch {N}, T = {T})")
