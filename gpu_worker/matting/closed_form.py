"""Closed-form matting (Levin, Lischinski and Weiss 2008) restricted to a band.

pymatting builds the matting Laplacian and solves the system; we add what a production
path needs around it: the work is cropped to the unknown pixels' bounding box (the
Laplacian costs ~400 bytes per pixel of the crop), known pixels may hold fractional
values (a translucent region solved at a coarser scale), and a weak pull towards a prior
keeps the system positive definite when an unknown region touches no known pixel, so
the solve cannot fail on odd inputs.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import scipy.sparse
from pymatting import cf_laplacian, ichol
from scipy import ndimage
from scipy.sparse.linalg import LinearOperator, cg

# Far below the Laplacian's entries (~1 per window), so it only decides where the data
# says nothing at all.
PRIOR_WEIGHT = 1e-5
# Incomplete Cholesky drops entries below this. pymatting's default (1e-4) builds a
# preconditioner so complete that building it cost 3x the whole solve on a 1 MP band;
# at 3e-3 the solve takes half the time and the mattes agree to 0.3% SAD (measured).
DISCARD_THRESHOLD = 3e-3


def solve_alpha(image: np.ndarray, known: np.ndarray, values: np.ndarray,
                prior: np.ndarray | None = None, epsilon: float = 1e-6,
                rtol: float = 1e-4, maxiter: int = 600,
                prior_weight: float = PRIOR_WEIGHT, preconditioner: str = "ichol"
                ) -> np.ndarray:
    """Alpha for every unknown pixel of `image`, given `values` at the `known` pixels.

    image: HxWx3 float (0..1); known: HxW bool; values: HxW float (used where known;
    may be fractional); prior: HxW float the unknowns lean towards where the image gives
    no evidence (defaults to 0.5). Returns HxW float32 alpha (known pixels unchanged).
    """
    alpha = np.where(known, values, 0.0).astype(np.float32)
    unknown = ~known
    if not unknown.any():
        return alpha
    if prior is None:
        prior = np.full(known.shape, 0.5)
    # Unknown pixels more than two pixels apart share no 3x3 window, so each group is an
    # independent system: solving them one by one on their own bounding boxes gives the
    # same answer with a fraction of the Laplacian (~400 bytes per pixel of the box).
    groups, count = ndimage.label(ndimage.binary_dilation(unknown, _EIGHT),
                                  structure=_EIGHT)
    for index, region in enumerate(ndimage.find_objects(groups), start=1):
        box = _grow(region, known.shape, 2)
        own = unknown[box] & (groups[box] == index)
        alpha[box] = np.where(own, _solve_box(
            image[box], ~own, values[box], prior[box], epsilon, rtol, maxiter,
            prior_weight, preconditioner), alpha[box])
    return alpha


_EIGHT = np.ones((3, 3), bool)


def _grow(box: tuple[slice, slice], shape: tuple[int, ...], margin: int
          ) -> tuple[slice, slice]:
    return (slice(max(0, box[0].start - margin), min(shape[0], box[0].stop + margin)),
            slice(max(0, box[1].start - margin), min(shape[1], box[1].stop + margin)))


def _solve_box(image: np.ndarray, known: np.ndarray, values: np.ndarray, prior: np.ndarray,
               epsilon: float, rtol: float, maxiter: int, prior_weight: float,
               preconditioner: str) -> np.ndarray:
    crop = np.ascontiguousarray(image, dtype=np.float64)
    known_c = np.ascontiguousarray(known)
    values_c = np.where(known_c, values, 0.0).astype(np.float64)
    prior_c = prior.astype(np.float64)
    laplacian = cf_laplacian(crop, epsilon=epsilon, radius=1, is_known=known_c)
    flat_known = known_c.ravel()
    u = np.flatnonzero(~flat_known)
    k = np.flatnonzero(flat_known)
    rows = laplacian[u]
    system = rows[:, u].tocsc()
    system = system + prior_weight * _identity(u.size)
    rhs = -(rows[:, k] @ values_c.ravel()[k]) + prior_weight * prior_c.ravel()[u]
    x0 = np.clip(prior_c.ravel()[u], 0.0, 1.0)
    operator = _jacobi(system) if preconditioner == "jacobi" else _preconditioner(system)
    x, _ = cg(system, rhs, x0=x0, M=operator, rtol=rtol, maxiter=maxiter)
    solved = values_c.ravel().astype(np.float32)
    solved[u] = np.clip(x, 0.0, 1.0)
    return solved.reshape(known_c.shape)


def _identity(n: int) -> scipy.sparse.csc_matrix:
    return scipy.sparse.identity(n, format="csc")


def _preconditioner(system: scipy.sparse.csc_matrix) -> LinearOperator:
    """Incomplete Cholesky (fast convergence); Jacobi if the factorisation breaks down.

    scipy's cg is used rather than pymatting's because it returns its best iterate
    instead of raising when the iteration limit is reached.
    """
    n = system.shape[0]
    try:
        # ichol prints a "PERFORMANCE WARNING" to stdout each time it has to retry with a
        # diagonal shift; that is routine for matting Laplacians and not worth a log line.
        with contextlib.redirect_stdout(io.StringIO()):
            factor = ichol(system, discard_threshold=DISCARD_THRESHOLD,
                           max_nnz=max(1_000_000, 60 * n))
        return LinearOperator((n, n), matvec=factor, dtype=np.float64)
    except ValueError:
        return _jacobi(system)


def _jacobi(system: scipy.sparse.csc_matrix) -> LinearOperator:
    n = system.shape[0]
    inverse_diagonal = 1.0 / np.maximum(system.diagonal(), 1e-12)
    return LinearOperator((n, n), matvec=lambda v: inverse_diagonal * v, dtype=np.float64)
