"""Length-controlled win rate (AlpacaEval 2) for one compared model against one baseline.

Judges, small local ones above all, tend to prefer the longer answer. A plain win rate then rewards a
fine-tune that learned to ramble. AlpacaEval 2 removes that effect by fitting a logistic GLM of the
judge's preference and reading off the win rate the model would have if its answers were as long as the
baseline's.

Per example ``i`` the preference is ``y_i`` (1 = model wins, 0 = baseline wins, 0.5 = tie, a soft
label), and the model is::

    P(model wins | i) = sigmoid(theta + phi * tanh(delta_i / std(delta)))
    delta_i = len_model_i - len_baseline_i

``theta`` is the model term (model minus baseline strength), ``phi`` the length term. The length
difference is divided by its standard deviation over the examples but not centred, so that ``delta = 0``
keeps meaning "equally long". The length-controlled win rate is the prediction at ``delta = 0``:
``100 * sigmoid(theta)``.

AlpacaEval's GLM has a third term: instruction difficulty times the model's minus the baseline's
sensitivity to it, with the difficulties estimated jointly over the many models of its leaderboard. With a
single model pair every instruction is judged once, so a per-instruction term cannot be estimated (it
would absorb each observation), and it enters both answers of the pair alike: it cancels from the model
versus baseline contrast, and is left out here.

The fit is Newton's method (IRLS) on the cross-entropy with soft labels and a tiny L2 penalty on both
coefficients. Why the penalty: when the data are separable (the model wins every example, or the longer
answer always wins) the unpenalised maximum-likelihood coefficients are infinite; the penalty keeps them
finite without moving well-determined fits measurably. Only numpy is needed. When length separates the
outcomes perfectly (the longer answer wins every time), the intercept of the penalised fit tends to
``log(wins / losses) / 2`` as the penalty goes to zero: the LC win rate still drops well below the raw
one, but it then reflects the balance of outcomes rather than a measured effect; more examples, or ties,
make it well determined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workspace.errors import OllatuneError

DEFAULT_L2 = 1e-4
_MAX_ITER = 100
_TOL = 1e-10


class WinRateError(OllatuneError, ValueError):
    """The preferences and lengths given cannot be fitted (empty, mismatched, out of range)."""

    default_hint = "pass one preference (0, 0.5 or 1) and one length per answer for every judged example"


@dataclass(frozen=True)
class LCWinRate:
    """The fit and both win rates, in percent (0..100) as AlpacaEval reports them."""

    lc_win_rate: float  # 100 * sigmoid(intercept): the win rate at equal lengths
    win_rate: float  # 100 * mean(preference): ties count half
    intercept: float  # theta, the model term
    length_coef: float  # phi, the weight of tanh(delta / std)
    length_std: float  # std of the length differences (0 when they do not vary: the term is then dropped)
    n: int


def _sigmoid(z: np.ndarray | float) -> np.ndarray | float:
    """Numerically stable logistic function (no overflow for large |z|)."""
    return np.exp(-np.logaddexp(0.0, -z))


def length_feature(len_model: Sequence[float], len_baseline: Sequence[float]) -> tuple[np.ndarray, float]:
    """``tanh(delta / std(delta))`` per example, and the std used.

    The sample standard deviation (ddof 1). With fewer than two examples or no
    variation the feature is all zeros: the length effect cannot be told apart from the model term, so
    the fit reduces to the plain win rate."""
    delta = np.asarray(len_model, dtype=float) - np.asarray(len_baseline, dtype=float)
    std = float(delta.std(ddof=1)) if delta.size >= 2 else 0.0
    if not np.isfinite(std) or std <= 0.0:
        return np.zeros_like(delta), 0.0
    return np.tanh(delta / std), std


def _penalised_loss(beta: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float) -> float:
    """Cross-entropy with soft labels plus ``l2/2 * |beta|^2``."""
    z = x @ beta
    # -[y log s(z) + (1-y) log(1-s(z))] = y*log(1+e^-z) + (1-y)*log(1+e^z)
    nll = y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)
    return float(nll.sum() + 0.5 * l2 * beta @ beta)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = DEFAULT_L2) -> np.ndarray:
    """Penalised logistic regression by Newton steps with step halving.

    Why step halving: near-separable data make the full Newton step overshoot; halving until the
    penalised loss decreases keeps every iteration a descent step, so the fit always converges (the
    objective is strictly convex for ``l2 > 0``)."""
    beta = np.zeros(x.shape[1])
    loss = _penalised_loss(beta, x, y, l2)
    eye = np.eye(x.shape[1])
    for _ in range(_MAX_ITER):
        p = _sigmoid(x @ beta)
        grad = x.T @ (p - y) + l2 * beta
        hess = (x * (p * (1.0 - p))[:, None]).T @ x + l2 * eye
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            candidate = beta - t * step
            new_loss = _penalised_loss(candidate, x, y, l2)
            if new_loss <= loss or t < 1e-8:
                break
            t /= 2
        converged = abs(loss - new_loss) < _TOL * max(1.0, abs(loss)) and float(np.abs(t * step).max()) < 1e-8
        beta, loss = candidate, new_loss
        if converged:
            break
    return beta


def _check(preferences: Sequence[float], len_model: Sequence[float], len_baseline: Sequence[float]) -> np.ndarray:
    if not (len(preferences) == len(len_model) == len(len_baseline)):
        raise WinRateError(f"{len(preferences)} preferences but {len(len_model)} model lengths and "
                           f"{len(len_baseline)} baseline lengths")
    if not preferences:
        raise WinRateError("no judged examples: a win rate needs at least one")
    y = np.asarray(preferences, dtype=float)
    if not np.all((y >= 0.0) & (y <= 1.0)):
        raise WinRateError("a preference must lie in 0..1 (1 = model wins, 0 = baseline wins, 0.5 = tie)")
    return y


def length_controlled_win_rate(preferences: Sequence[float], len_model: Sequence[float],
                               len_baseline: Sequence[float], l2: float = DEFAULT_L2) -> LCWinRate:
    """Fit the GLM and return the length-controlled and the raw win rate (percent) with the coefficients.

    ``preferences[i]`` is 1 when the model's answer won example ``i``, 0 when the baseline's did, 0.5 for
    a tie; lengths are any consistent unit (characters: AlpacaEval uses string length)."""
    y = _check(preferences, len_model, len_baseline)
    feature, std = length_feature(len_model, len_baseline)
    x = np.column_stack([np.ones_like(y), feature])
    beta = fit_logistic(x, y, l2)
    return LCWinRate(lc_win_rate=100.0 * float(_sigmoid(beta[0])), win_rate=100.0 * float(y.mean()),
                     intercept=float(beta[0]), length_coef=float(beta[1]), length_std=std, n=int(y.size))
