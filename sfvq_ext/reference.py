"""Plain-PyTorch statements of every SFVQ op, written for reading, not speed.

They are the test oracle for the compiled kernels and the baselines in the
benchmarks. Brute force computes in float64 over every segment.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .ops import Projection


def _ldexp(t: Tensor, e) -> Tensor:
    """t * 2^e (e an int, or an int tensor broadcasting against t), in steps of at
    most 2^1000 because 2^e itself may not be a float64 number."""
    e = torch.as_tensor(e, dtype=torch.int64)
    while bool((e != 0).any()):
        step = e.clamp(-1000, 1000)
        t = t * torch.pow(2.0, step.double())
        e = e - step
    return t


def _row_exponents(x: Tensor, table: Tensor) -> Tensor:
    """Per row of x (N, D): e such that 2^e times the larger of the row's and the table's
    largest magnitude lies in [0.5, 1) (0 where both are zero), int64 (N,)."""
    largest = torch.maximum(x.abs().amax(dim=1), table.abs().max()) if x.shape[1] else x.new_zeros(len(x))
    _, exponent = torch.frexp(largest)
    return torch.where(largest > 0, -exponent.long(), 0)


def _scaled(x: Tensor, table: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x and the table both multiplied by 2^e for each row's e (:func:`_row_exponents`):
    (N, D) and (N, K, D), and e. Multiplying by a power of two is exact (away from
    subnormals), so the float64 brute force below runs where no square overflows,
    whatever the magnitude of the input (DESIGN.md section 6)."""
    e = _row_exponents(x, table)
    return _ldexp(x, e[:, None]), _ldexp(table[None], e[:, None, None]), e


def _unscale_squared(dist: Tensor, e: Tensor) -> Tensor:
    """Squared distances computed on values scaled by 2^e, in the input's units (Inf beyond float64)."""
    return _ldexp(dist, -2 * e)


def _segment_fits(x: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    """t and squared distance of every row of x (N, D) to every segment: (N, K-1) each.
    ``codebook`` is (K, D), or (N, K, D) for one (scaled) copy per row.

    The distance is always ||x - ((1 - t) c_i + t c_{i+1})||^2: that point is c_{i+1}
    exactly at t = 1 and c_i at t = 0, so two segments meeting at the nearest vertex
    tie exactly (and argmin takes the first)."""
    c = codebook if codebook.dim() == 3 else codebook[None]
    c0, c1 = c[:, :-1], c[:, 1:]
    d = c1 - c0
    length2 = (d * d).sum(-1)
    p = ((x[:, None, :] - c0) * d).sum(-1)
    t = torch.where(length2 > 0, p / torch.where(length2 > 0, length2, 1), torch.zeros_like(p)).clamp(0, 1)
    point = (1 - t)[..., None] * c0 + t[..., None] * c1  # (N, K-1, D)
    dist = ((x[:, None, :] - point) ** 2).sum(-1)
    return t, dist


def _projection(x: Tensor, codebook: Tensor, segment: Tensor, t: Tensor, dist: Tensor, shape) -> Projection:
    point = (1 - t)[:, None] * codebook[segment] + t[:, None] * codebook[segment + 1]
    return Projection(point.reshape(*shape, codebook.shape[1]), segment.reshape(shape), t.reshape(shape),
                      (segment + t).reshape(shape), dist.reshape(shape))


def project(x: Tensor, codebook: Tensor, chunk: int = 256) -> Projection:
    """Exact projection by brute force over every segment, float64. Ties: smallest segment.

    Each row and the codebook are scaled together by a power of two (exact) before
    the search, so every finite input is answered; distances beyond float64 are Inf."""
    shape = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1]).double()
    codebook = codebook.double()
    seg, tt, dd = [], [], []
    for rows in x.split(chunk):
        xs, cs, e = _scaled(rows, codebook)
        t, dist = _segment_fits(xs, cs)
        best = dist.argmin(dim=1)  # first minimum: the smallest index among ties
        seg.append(best)
        tt.append(t.gather(1, best[:, None])[:, 0])
        dd.append(_unscale_squared(dist.gather(1, best[:, None])[:, 0], e))
    if not seg:
        empty = x.new_empty(0)
        return _projection(x, codebook, empty.long(), empty, empty, shape)
    return _projection(x, codebook, torch.cat(seg), torch.cat(tt), torch.cat(dd), shape)


def project_vertex_rule(x: Tensor, codebook: Tensor) -> Projection:
    """The original SFVQ authors' evaluation rule, stated literally, in float64:
    nearest vertex j (first on ties), j clamped to [1, K-2], then segment j-1
    unless segment j is strictly nearer. Departures, where their code breaks:
    t = 0 on zero-length segments (theirs divides by zero) and K = 2 uses segment 0.
    Scaled per row as in :func:`project`."""
    shape = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1]).double()
    c = codebook.double()
    xs, cs, e = _scaled(x, c)
    t, dist = _segment_fits(xs, cs)
    if c.shape[0] == 2:
        return _projection(x, c, torch.zeros(len(x), dtype=torch.long), t[:, 0], _unscale_squared(dist[:, 0], e), shape)
    vertex_dist = ((xs[:, None, :] - cs) ** 2).sum(-1)
    j = vertex_dist.argmin(dim=1).clamp(1, c.shape[0] - 2)
    rows = torch.arange(len(x))
    take_after = dist[rows, j] < dist[rows, j - 1]
    segment = torch.where(take_after, j, j - 1)
    return _projection(x, c, segment, t[rows, segment], _unscale_squared(dist[rows, segment], e), shape)


def nearest(x: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Brute-force nearest row of points, float64 (scaled per row as in :func:`project`).
    Ties: smallest index."""
    shape = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1]).double()
    xs, ps, e = _scaled(x, points.double())
    dist = ((xs[:, None, :] - ps) ** 2).sum(-1)
    best = dist.argmin(dim=1)
    return best.reshape(shape), _unscale_squared(dist.gather(1, best[:, None])[:, 0], e).reshape(shape)


def decode(coord: Tensor, codebook: Tensor) -> Tensor:
    """Point at curve coordinate u: j = min(floor(u), K-2), f = u - j, (1-f) c_j + f c_{j+1}; u clamped to [0, K-1]."""
    K = codebook.shape[0]
    u = coord.double().clamp(0, K - 1)
    j = u.floor().long().clamp(max=K - 2)
    f = (u - j)[..., None]
    c = codebook.double()
    return (1 - f) * c[j] + f * c[j + 1]


def expand_coordinates(K: int, eps: float) -> Tensor:
    """Curve coordinates of the 2K vertices of the expanded codebook."""
    coords = []
    for j in range(K):
        coords += [j, j + eps] if j < K // 2 else [j - eps, j]
    return torch.tensor(coords, dtype=torch.float64)


def expand(codebook: Tensor, eps: float = 0.01) -> Tensor:
    return decode(expand_coordinates(codebook.shape[0], eps), codebook)


def init_codebook(sample: Tensor) -> Tensor:
    """Norm-quartile means, as a loop: n // 4 vectors per part, sorted by norm."""
    norms = [float(torch.linalg.vector_norm(v.double())) for v in sample]
    order = sorted(range(len(norms)), key=lambda i: norms[i])  # stable
    part = len(order) // 4
    return torch.stack([sample[order[q * part:(q + 1) * part]].double().mean(0) for q in range(4)])


def authors_project(x: Tensor, codebook: Tensor) -> Tensor:
    """The authors' evaluation as their code computes it (benchmark baseline):
    an (N, D, K) difference tensor for the nearest vertex, in the input dtype,
    then the better of the two adjacent segments. Returns the quantized points."""
    K = codebook.shape[0]
    vertex_dist = (x.unsqueeze(-1) - codebook.t().unsqueeze(0)).square().sum(dim=1)
    j = vertex_dist.argmin(dim=1).clamp(min=1, max=K - 2)
    before, here, after = codebook[j - 1], codebook[j], codebook[j + 1]
    t_b = (((here - before) * (x - before)).sum(1) / (here - before).square().sum(1)).clamp(0, 1)[:, None]
    t_a = (((after - here) * (x - here)).sum(1) / (after - here).square().sum(1)).clamp(0, 1)[:, None]
    q_b = before + t_b * (here - before)
    q_a = here + t_a * (after - here)
    take_after = ((x - q_a).square().sum(1) < (x - q_b).square().sum(1))[:, None]
    return torch.where(take_after, q_a, q_b)


def dithered_points(codebook: Tensor, dither: Tensor) -> Tensor:
    """One point per segment: p_i = (1 - r_i) c_i + r_i c_{i+1}, (K-1, D)."""
    r = dither[:, None]
    return (1 - r) * codebook[:-1] + r * codebook[1:]


def authors_dithered_quantize(x: Tensor, codebook: Tensor, dither: Tensor) -> tuple[Tensor, Tensor]:
    """The authors' training-time search as their code computes it (benchmark
    baseline): an (N, D, K-1) difference tensor to the dithered points, argmin,
    then the chosen points (differentiable in the codebook). Returns (quantized, segment)."""
    points = dithered_points(codebook, dither)
    distances = (x.unsqueeze(-1) - points.t().unsqueeze(0)).square().sum(dim=1)
    segment = distances.argmin(dim=1)
    return points[segment], segment


def authors_noise_substitution(x: Tensor, quantized: Tensor, noise: Tensor) -> Tensor:
    """The authors' NSVQ output x + (|x - q| / |v| + 1e-12) v, with the norms as
    square roots of sums of squares: its gradient is NaN where x == q."""
    error_norm = (x - quantized).square().sum(dim=1, keepdim=True).sqrt()
    noise_norm = noise.square().sum(dim=1, keepdim=True).sqrt()
    return x + (error_norm / noise_norm + 1e-12) * noise


def authors_train_step(x: Tensor, codebook: Tensor, optimizer: torch.optim.Optimizer, dither: Tensor) -> Tensor:
    """One step of the authors' training loop (benchmark baseline): their dithered
    search, the MSE between inputs and chosen points, backward, optimizer step."""
    quantized, _ = authors_dithered_quantize(x, codebook, dither)
    loss = torch.nn.functional.mse_loss(x, quantized)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()
