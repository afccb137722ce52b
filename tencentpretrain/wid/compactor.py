"""A linear layer with identity-initialised compactors on its input and output sides.

    y = R (W (L x) + b)  ==  (R W L) x + R b          W: (out x in), L: (in x in), R: (out x out)

`weight`/`bias` keep nn.Linear's names, so a teacher checkpoint loads unchanged; the compactors are
`compactor_in` (L) and `compactor_out` (R). Two ways to compute the same thing:

  weights      fold W' = R W L once per forward (d_out*d_in*(d_in+d_out) multiply-adds, whatever
               the token count), then one ordinary matmul;
  activations  three matmuls over the tokens (N*(d_in^2 + d_in*d_out + d_out^2)).

`fold="auto"` picks the cheaper one per layer and per forward from the number of tokens N (BERT-base
breaks even near N = d). Compactor products always run in fp32 with autocast off: in bf16, 1 + 1e-4
rounds to 1, so the small updates of a near-identity matrix would vanish.

Coordinates whose mask decayed to exactly zero ("dead", see groups.py) are skipped: only the alive
rows of R and columns of L are folded, and the result is scattered back to full width, so a pruned
model pays less for the fold while its activations keep the teacher's shapes.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def fp32_off_autocast(device_type):
    return torch.autocast(device_type, enabled=False)


def scatter_cols(x, index, size):
    """x (..., k) placed at columns `index` of a zero (..., size) tensor (differentiable)."""
    return x.new_zeros(*x.shape[:-1], size).index_copy(x.dim() - 1, index, x)


def compact(h, c, rows=None, cols=None):
    """h @ C[rows][:, cols]^T in fp32; h is already restricted to `cols`. Output has len(rows) features."""
    if rows is not None:
        c = c[rows]
    if cols is not None:
        c = c[:, cols]
    with fp32_off_autocast(h.device.type):
        return F.linear(h.float(), c.float())


class CompactedLinear(nn.Module):
    def __init__(self, in_features, out_features, bias=True, compact_in=True, compact_out=True, fold="auto"):
        super().__init__()
        self.in_features, self.out_features, self.fold = in_features, out_features, fold
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.compactor_in = nn.Parameter(torch.eye(in_features)) if compact_in else None
        self.compactor_out = nn.Parameter(torch.eye(out_features)) if compact_out else None
        nn.init.normal_(self.weight, 0.0, 0.02)
        self.groups = (None, None)  # (input-side group, output-side group), set by groups.attach

    @classmethod
    def like(cls, linear, compact_in=True, compact_out=True, fold="auto"):
        """A compacted copy of an nn.Linear (same weight, bias, and checkpoint keys)."""
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, compact_in, compact_out, fold)
        with torch.no_grad():
            new.weight.copy_(linear.weight)
            if linear.bias is not None:
                new.bias.copy_(linear.bias)
        return new

    def reset_compactors(self):
        with torch.no_grad():
            for c in (self.compactor_in, self.compactor_out):
                if c is not None:
                    c.copy_(torch.eye(c.shape[0], dtype=c.dtype, device=c.device))

    def extra_repr(self):
        sides = [s for s, c in (("in", self.compactor_in), ("out", self.compactor_out)) if c is not None]
        return f"{self.in_features} -> {self.out_features}, compactors: {'+'.join(sides) or 'none'}, fold={self.fold}"

    # ---- which coordinates take part ---------------------------------------------------------
    def _active(self):
        g_in, g_out = self.groups
        a_in = g_in.active() if g_in is not None and self.compactor_in is not None else None
        a_out = g_out.active() if g_out is not None and self.compactor_out is not None else None
        return a_in, a_out

    def costs(self, tokens, a_in=None, a_out=None):
        """(fold, activations) multiply-adds of the compactor part of one forward."""
        n_in, n_out = self.in_features, self.out_features
        k_in = n_in if a_in is None else len(a_in)
        k_out = n_out if a_out is None else len(a_out)
        L, R = self.compactor_in is not None, self.compactor_out is not None
        act = tokens * ((n_in * k_in if L else 0) + (n_out * k_out if R else 0))
        if L and R:
            fold = min(k_out * n_out * n_in + k_out * n_in * k_in, n_out * n_in * k_in + k_out * n_out * k_in)
        elif R:
            fold = k_out * n_out * n_in
        elif L:
            fold = n_out * n_in * k_in
        else:
            fold = 0
        return fold, act

    def use_fold(self, tokens, a_in=None, a_out=None):
        if self.fold != "auto":
            return self.fold == "weights"
        fold, act = self.costs(tokens, a_in, a_out)
        return fold < act

    # ---- the two forms ------------------------------------------------------------------------
    def folded(self, a_in=None, a_out=None):
        """(W', b') = (R W L, R b) over the alive rows/columns, scattered to full size, in fp32."""
        with fp32_off_autocast(self.weight.device.type):
            w = self.weight.float()
            b = self.bias.float() if self.bias is not None else None
            L, R = self.compactor_in, self.compactor_out
            if L is not None:
                L = (L if a_in is None else L[:, a_in]).float()
            if R is not None:
                R = (R if a_out is None else R[a_out]).float()
            if L is not None and R is not None:
                k_out, k_in = R.shape[0], L.shape[1]
                n_out, n_in = w.shape
                if k_out * n_out * n_in + k_out * n_in * k_in <= n_out * n_in * k_in + k_out * n_out * k_in:
                    w = (R @ w) @ L
                else:
                    w = R @ (w @ L)
            elif R is not None:
                w = R @ w
            elif L is not None:
                w = w @ L
            if R is not None and b is not None:
                b = R @ b
            # Back to full size: dead coordinates are exactly zero in both forms.
            if a_in is not None:
                w = scatter_cols(w, a_in, self.in_features)
            if a_out is not None:
                w = w.new_zeros(self.out_features, w.shape[1]).index_copy(0, a_out, w)
                if b is not None:
                    b = b.new_zeros(self.out_features).index_copy(0, a_out, b)
        return w, b

    def forward(self, x, fold=None):
        a_in, a_out = self._active()
        if self.compactor_in is None and self.compactor_out is None:
            return F.linear(x, self.weight, self.bias)
        fold = self.use_fold(x.numel() // x.shape[-1], a_in, a_out) if fold is None else fold
        if fold:
            w, b = self.folded(a_in, a_out)
            return F.linear(x, w, b)
        h = x
        if self.compactor_in is not None:
            if a_in is not None:
                h = h[..., a_in]
            h = compact(h, self.compactor_in, cols=a_in)
        h = F.linear(h, self.weight, self.bias)  # under autocast this runs in bf16/fp16 like the teacher
        if self.compactor_out is not None:
            dtype = h.dtype
            h = compact(h, self.compactor_out, rows=a_out)
            if a_out is not None:
                h = scatter_cols(h, a_out, self.out_features)
            h = h.to(dtype)
        return h
